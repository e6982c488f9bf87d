"""The provider kit: what every provider builds on, so none copies another.

A provider is the contract (`mlform.providers.base`) plus the kit plus what it adds
for its own service.  No provider imports another; what two of them would share
lives here, written once:

| module | holds |
| --- | --- |
| `handlers` | `HandlerProvider` and `KindHandler`: one handler per kind, the provider's set-up (config, env object), dispatch through a table, kinds declared once |
| `calls` | one resource at a time, the way the engine calls a provider (facts, validate, plan): for tests and tools |
| `plans` | the plan shape: desired attributes plus computed ones, known or `UNKNOWN` |
| `runs` | the run contract: environment variables, entrypoint resolution, output files, the code archive shipped to remote runs |
| `sweeps` | hyperparameter sweeps, provider-neutral: the `sweep` as Optuna distributions, the seeded TPE sampler and median pruner, the objective from a trial's metrics ("never reported metric X"), which trials count, `plan_sweep` (`best_parameters`, the plan reason) |
| `sweep_loop` | a sweep's ask/tell loop: trials at once in slots, told, resumed or rejoined after a killed apply (`SweepLoop`, `Outcome`) |
| `pulumi_claims` | `mlform import-state pulumi`, provider-neutral: per Pulumi type a `ClaimRule` (kind, import id or part, parent of an unmarked part), owners from AWS tags or Kubernetes annotations, addresses from names, `claim_resources` |
| `run_ledger` | run records kept in an `ObjectStore` for providers that train elsewhere (SageMaker, Kubernetes): `RunLedger.open` before the job starts, `close` with the outcome, `records` in one listing |
| `torchrun` | the provider-neutral torchrun launch: `Launch`, `launch_of`, `torchrun_argv` (one node: c10d; several: static rendezvous), `failed_rank` |
| `run_records` | `RunRecord`: the one shape of a run's record (`Provider.run_records`), `run_record` to build one from the planned attributes, step lines of the run contract parsed from a run's log |
| `gate` | `check_gate`: a run's metric against the pipeline's gate; `check_challenger`: against the champion a stage points at; one wording |
| `champions` | what a registry records about a version made from a run (`run_lineage`: metrics, data and code digests) and the champion `check_challenger` reads |
| `reruns` | when a pipeline runs again (`rerun_reason`, `plan_run`), stale markers |
| `sources` | dataset sources: schemes, local content, http(s) downloads, `SourceError` |
| `digests` | the one sha256 cache (files by path/size/mtime, derived values by key) |
| `datasets` | a dataset's facts (content digest, row profile) read before planning, judged purely |
| `checks` | data quality checks: one read per dataset (`profile`; `count_rows` when nothing is checked), pure judgements |
| `arrow_tables` | the vectorized csv profile (pyarrow, multi-threaded), exactly the row reader's answers |
| `artifacts` | a model's artifact URI, local paths of URIs |
| `monitoring` | monitor results, findings, breach reasons, stale marker documents |
| `monitor_check` | the drift and health check on files (captured requests, baseline): reports and breach actions (local, kubernetes pods) |
| `drift_stats` | PSI, KS, p99, error rate |
| `names` | deterministic names, ownership marks (AWS tags, Kubernetes labels) |
| `accelerators` | accelerator names (`cpu`, `any-gpu`, `nvidia-h100`...) matched against device names by words |
| `parallel` | `run_parallel`: many reads at once, threads only when they wait |
| `pricing` | `PriceTable`, `endpoint_basis`, `pipeline_basis`: price bases (`Provider.cost_basis`) from a price table, measured run durations |
| `storage` | `ObjectStore`: one S3-compatible bucket and prefix (boto3), and the AWS error helpers |
| `serving` | the OIP v2 model server, a program (torch, FastAPI): the app, `Server`, loading, the request path; `local` starts it, kubernetes pods run it |
| `serving_experiments` | the server's experiments apart from HTTP: `Experiment`, `Route`, sticky keys, `IssuedIds` (ids read back from the capture's tail), the shadow's `Mirror`, feedback checks |
| `serving_capture` | the server's capture and feedback writer (`CaptureLog`, `CaptureLimits`, rotation, exact sampling) and its JSON |
| `serving_runtime` | the server's models and inference: predictors by framework (torch, sklearn, onnx), the worker pool, dynamic batching, pre/post hooks (imports nothing of mlform) |
| `bandit` | the Thompson-sampling `Policy` (Beta or Gaussian posteriors, floor share, durable snapshot + feedback log replay): the server runs it, SageMaker's `experiment step` too |
| `variants` | an endpoint's variants in one shape (`endpoint_variants`: `model` is the one variant `primary`), the experiment with defaults, plan reasons for variant changes |
| `experiment_records` | the fields of captured requests and rewards the report reads, and the one JSON-lines reader every provider's `experiment_records` action uses |
| `experiment_stats` | the experiment report's numbers: per-variant traffic, errors, latency, reward intervals, P(best), the A/B tests (scipy) |
| `canary` | canary analysis: two scrapes of a server's /metrics -> the canary version's error rate, p99 and custom metrics -> checks and the rollback verdict |

`serving`, `serving_runtime`, `serving_experiments`, `serving_capture` and `bandit`
import nothing of mlform but each other (an import contract): the server runs by file path.  Nothing is imported here: a provider imports the modules it uses, so a provider
without numpy (or boto3, or torch) still imports.  docs/providers.md has a guide to
writing a provider on the kit, with a complete small example.
"""
