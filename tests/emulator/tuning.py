"""HyperParameterTuningJobs for the emulator (installed by moto_plugin.install).

moto 5.2 keeps a CreateHyperParameterTuningJob request and describes it Completed at
once with a fixed fake BestTrainingJob; it starts no training jobs and has no
ListTrainingJobsForHyperParameterTuningJob or StopHyperParameterTuningJob.  Here:

* **Trials are moto training jobs.**  CreateHyperParameterTuningJob (moto's, which keeps
  the request as sent and refuses a name in use) now starts InProgress and creates
  ``MaxParallelTrainingJobs`` training jobs through the training-job backend (so they
  follow the plugin's training-job scripts: ``steps``, ``training_metrics``,
  ``fail_training``), named ``<tuning job>-NNN-<8 hex>`` as SageMaker names them, with
  the definition's StaticHyperParameters plus the trial's values, its Environment and
  MetricDefinitions, and the tuning job's tags (AWS adds them to its training jobs).
  Each DescribeHyperParameterTuningJob moves every running trial one step (a DescribeTrainingJob of it) and starts the next trials as earlier ones end,
  up to ``MaxNumberOfTrainingJobs``.
* **Values are drawn deterministically.**  Categorical ranges are walked as a grid (the
  first trials cover every combination of the categorical values, in order), continuous
  and integer ranges drawn from a ``random.Random`` seeded by RandomSeed (0 without one),
  uniformly or, with ScalingType Logarithmic, log-uniformly.  Values are sent as
  SageMaker sends them: a categorical value as listed, a number as text.
* **A planted metric.**  ``planted_metrics = {"<hyperparameter>": {"<value as sent>":
  {"<metric>": number}}}`` in the control file gives a training job whose hyperparameter
  has that value those metrics on top of ``training_metrics`` (moto_plugin applies it to
  every training job), so a test can make one value of a sweep the better one.
* **The best job.**  When every trial ended the tuning job is Completed, its
  BestTrainingJob the Completed trial with the best objective (from its
  FinalMetricDataList, by the objective's Type); Failed ("All training jobs failed")
  when none has the objective.  TrainingJobStatusCounters and ObjectiveStatusCounters
  count the trials.
* **ListTrainingJobsForHyperParameterTuningJob** (TrainingJobSummaries with
  TunedHyperParameters and the objective metric) and **StopHyperParameterTuningJob**
  (Stopping for one describe, which stops the running trials, then Stopped).
"""

from __future__ import annotations

import hashlib
import math
import random
import threading

_lock = threading.RLock()
#: tuning job ARN -> its trials: [{"name", "values"}], in creation order
_trials: dict[str, list[dict]] = {}


def reset() -> None:
    with _lock:
        _trials.clear()


def planted(hyper_parameters: dict | None, settings: dict) -> dict[str, float]:
    """The metrics `planted_metrics` (the control file's, in `settings`) gives a job."""
    out: dict[str, float] = {}
    for name, table in settings.items():
        value = (hyper_parameters or {}).get(name)
        metrics = table.get(str(value)) if isinstance(table, dict) and value is not None else None
        if isinstance(metrics, dict):
            out.update({k: float(v) for k, v in metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def _draw(config: dict, index: int, rng: random.Random) -> dict[str, str]:
    """Trial `index`'s values: categorical ranges as a grid, numeric ones drawn."""
    ranges = config.get("ParameterRanges") or {}
    values: dict[str, str] = {}
    stride = 1
    for r in ranges.get("CategoricalParameterRanges") or []:
        choices = list(r["Values"])
        values[r["Name"]] = choices[(index // stride) % len(choices)]
        stride *= len(choices)
    for r in ranges.get("ContinuousParameterRanges") or []:
        low, high = float(r["MinValue"]), float(r["MaxValue"])
        if r.get("ScalingType") == "Logarithmic":
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        values[r["Name"]] = repr(value)
    for r in ranges.get("IntegerParameterRanges") or []:
        low, high = int(r["MinValue"]), int(r["MaxValue"])
        if r.get("ScalingType") == "Logarithmic":
            value = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        else:
            value = rng.randint(low, high)
        values[r["Name"]] = str(min(max(value, low), high))
    return values


def _objective(job, metric: str) -> float | None:
    for entry in getattr(job, "final_metric_data_list", None) or []:
        if entry.get("MetricName") == metric:
            return float(entry["Value"])
    return None


def install(backend_cls, response_cls, *, now) -> None:
    """Patch moto's tuning jobs; `now` is moto_plugin's clock."""
    from moto.core.responses import ActionResult, EmptyResult
    from moto.sagemaker.exceptions import ResourceNotFound, ValidationError

    original_create = backend_cls.create_hyper_parameter_tuning_job

    def start_trial(backend, tuning) -> None:
        trials = _trials[tuning.arn]
        config = tuning.hyper_parameter_tuning_job_config
        index = len(trials)
        rng = random.Random(f"{config.get('RandomSeed', 0)}:{index}")
        values = _draw(config, index, rng)
        name = tuning.hyper_parameter_tuning_job_name
        digest = hashlib.sha256(f"{name}:{index}".encode()).hexdigest()[:8]
        trial = f"{name}-{index + 1:03d}-{digest}"
        definition = tuning.training_job_definition or {}
        backend.create_training_job(
            training_job_name=trial,
            hyper_parameters={**(definition.get("StaticHyperParameters") or {}), **values},
            algorithm_specification=dict(definition.get("AlgorithmSpecification") or {}),
            role_arn=definition.get("RoleArn"),
            input_data_config=definition.get("InputDataConfig") or [],
            output_data_config=definition.get("OutputDataConfig"),
            resource_config=definition.get("ResourceConfig"),
            vpc_config=definition.get("VpcConfig"),
            stopping_condition=definition.get("StoppingCondition"),
            # AWS adds the tuning job's tags to every training job it launches
            tags=[dict(t) for t in tuning.tags or []], enable_network_isolation=False,
            enable_inter_container_traffic_encryption=False,
            enable_managed_spot_training=bool(definition.get("EnableManagedSpotTraining")),
            checkpoint_config=definition.get("CheckpointConfig"), debug_hook_config=None,
            debug_rule_configurations=None, tensor_board_output_config=None,
            experiment_config=None)
        job = backend.training_jobs[trial]
        if definition.get("Environment"):
            job.environment = dict(definition["Environment"])
        trials.append({"name": trial, "values": values})

    def running(backend, tuning) -> list:
        return [backend.training_jobs[t["name"]] for t in _trials.get(tuning.arn, [])
                if backend.training_jobs[t["name"]].training_job_status in ("InProgress",
                                                                            "Stopping")]

    def summarize(backend, tuning) -> None:
        """Counters, and the end: status and the best job, once every trial ended."""
        config = tuning.hyper_parameter_tuning_job_config
        objective = config["HyperParameterTuningJobObjective"]
        jobs = [(t, backend.training_jobs[t["name"]]) for t in _trials.get(tuning.arn, [])]
        statuses = [job.training_job_status for _, job in jobs]
        scored = [(t, job, _objective(job, objective["MetricName"])) for t, job in jobs
                  if job.training_job_status == "Completed"]
        scored = [item for item in scored if item[2] is not None]
        tuning.training_job_status_counters = {
            "Completed": statuses.count("Completed"),
            "InProgress": statuses.count("InProgress") + statuses.count("Stopping"),
            "RetryableError": 0, "NonRetryableError": statuses.count("Failed"),
            "Stopped": statuses.count("Stopped")}
        tuning.objective_status_counters = {
            "Succeeded": len(scored), "Pending": tuning.training_job_status_counters["InProgress"],
            "Failed": len(jobs) - len(scored) - tuning.training_job_status_counters["InProgress"]}
        tuning.best_training_job = tuning.OverallBestTrainingJob = None
        if scored:
            pick = max if objective["Type"] == "Maximize" else min
            trial, job, value = pick(scored, key=lambda item: item[2])
            tuning.best_training_job = tuning.OverallBestTrainingJob = {
                "TrainingJobName": job.training_job_name, "TrainingJobArn": job.arn,
                "TuningJobName": tuning.hyper_parameter_tuning_job_name,
                "CreationTime": job.creation_time, "TrainingStartTime": job.creation_time,
                "TrainingEndTime": job.training_end_time, "TrainingJobStatus": "Completed",
                "TunedHyperParameters": dict(trial["values"]),
                "FinalHyperParameterTuningJobObjectiveMetric": {
                    "Type": objective["Type"], "MetricName": objective["MetricName"],
                    "Value": value},
                "ObjectiveStatus": "Succeeded"}

    def create_hyper_parameter_tuning_job(self, **kwargs):
        arn = original_create(self, **kwargs)
        tuning = self.hyper_parameter_tuning_jobs[kwargs["hyper_parameter_tuning_job_name"]]
        tuning.hyper_parameter_tuning_job_status = "InProgress"
        tuning.hyper_parameter_tuning_end_time = None
        tuning.tuning_job_completion_details = None
        tuning.consumed_resources = None
        tuning.failure_reason = None
        limits = tuning.hyper_parameter_tuning_job_config["ResourceLimits"]
        with _lock:
            _trials[arn] = []
            for _ in range(min(int(limits["MaxParallelTrainingJobs"]),
                               int(limits["MaxNumberOfTrainingJobs"]))):
                start_trial(self, tuning)
            summarize(self, tuning)
        return arn

    def describe_hyper_parameter_tuning_job(self, hyper_parameter_tuning_job_name):
        tuning = self.hyper_parameter_tuning_jobs.get(hyper_parameter_tuning_job_name)
        if tuning is None or tuning.arn not in _trials:   # unknown, or moto's own fake
            if tuning is None:
                raise ResourceNotFound(message="Could not find hyper parameter tuning job "
                                               f"'{hyper_parameter_tuning_job_name}'.")
            return tuning.describe()
        with _lock:
            status = tuning.hyper_parameter_tuning_job_status
            if status in ("InProgress", "Stopping"):
                for job in running(self, tuning):
                    if status == "Stopping" and job.training_job_status == "InProgress":
                        job.training_job_status = job.secondary_status = "Stopped"
                        job.training_end_time = now()
                    else:
                        self.describe_training_job(job.training_job_name)   # one step
                limits = tuning.hyper_parameter_tuning_job_config["ResourceLimits"]
                while (status == "InProgress"
                       and len(_trials[tuning.arn]) < int(limits["MaxNumberOfTrainingJobs"])
                       and len(running(self, tuning)) < int(limits["MaxParallelTrainingJobs"])):
                    start_trial(self, tuning)
                summarize(self, tuning)
                if not running(self, tuning) and (
                        status == "Stopping"
                        or len(_trials[tuning.arn]) >= int(limits["MaxNumberOfTrainingJobs"])):
                    tuning.hyper_parameter_tuning_end_time = now()
                    if status == "Stopping":
                        tuning.hyper_parameter_tuning_job_status = "Stopped"
                    elif tuning.best_training_job is None:
                        tuning.hyper_parameter_tuning_job_status = "Failed"
                        tuning.failure_reason = ("All training jobs failed. Check the "
                                                 "training jobs' FailureReason.")
                    else:
                        tuning.hyper_parameter_tuning_job_status = "Completed"
                tuning.last_modified_time = now()
            return tuning.describe()

    def list_training_jobs_for_hyper_parameter_tuning_job(self, name: str) -> list[dict]:
        tuning = self.hyper_parameter_tuning_jobs.get(name)
        if tuning is None:
            raise ResourceNotFound(message=f"Could not find hyper parameter tuning job '{name}'.")
        objective = tuning.hyper_parameter_tuning_job_config["HyperParameterTuningJobObjective"]
        out = []
        for trial in _trials.get(tuning.arn, []):
            job = self.training_jobs[trial["name"]]
            summary = {"TrainingJobName": job.training_job_name, "TrainingJobArn": job.arn,
                       "TuningJobName": name, "CreationTime": job.creation_time,
                       "TrainingJobStatus": job.training_job_status,
                       "TunedHyperParameters": dict(trial["values"])}
            value = _objective(job, objective["MetricName"])
            if value is not None:
                summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                    "Type": objective["Type"], "MetricName": objective["MetricName"],
                    "Value": value}
            summary["ObjectiveStatus"] = "Succeeded" if value is not None else (
                "Pending" if job.training_job_status == "InProgress" else "Failed")
            if getattr(job, "training_end_time", None):
                summary["TrainingEndTime"] = job.training_end_time
            out.append(summary)
        return out

    def stop_hyper_parameter_tuning_job(self, name: str) -> None:
        tuning = self.hyper_parameter_tuning_jobs.get(name)
        if tuning is None:
            raise ResourceNotFound(message=f"Could not find hyper parameter tuning job '{name}'.")
        if tuning.hyper_parameter_tuning_job_status != "InProgress":
            raise ValidationError(message="The request was rejected because the tuning job is "
                                          f"in status {tuning.hyper_parameter_tuning_job_status}.")
        tuning.hyper_parameter_tuning_job_status = "Stopping"

    def respond_list_training_jobs(self):
        found = self.sagemaker_backend.list_training_jobs_for_hyper_parameter_tuning_job(
            self._get_param("HyperParameterTuningJobName"))
        return ActionResult({"TrainingJobSummaries": found})

    def respond_stop(self):
        self.sagemaker_backend.stop_hyper_parameter_tuning_job(
            self._get_param("HyperParameterTuningJobName"))
        return EmptyResult()

    backend_cls.create_hyper_parameter_tuning_job = create_hyper_parameter_tuning_job
    backend_cls.describe_hyper_parameter_tuning_job = describe_hyper_parameter_tuning_job
    backend_cls.list_training_jobs_for_hyper_parameter_tuning_job = (
        list_training_jobs_for_hyper_parameter_tuning_job)
    backend_cls.stop_hyper_parameter_tuning_job = stop_hyper_parameter_tuning_job
    response_cls.list_training_jobs_for_hyper_parameter_tuning_job = respond_list_training_jobs
    response_cls.stop_hyper_parameter_tuning_job = respond_stop
