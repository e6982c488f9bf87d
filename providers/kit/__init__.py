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
| `gate` | `check_gate`: a run's metric against the pipeline's gate, one wording |
| `reruns` | when a pipeline runs again (`rerun_reason`, `plan_run`), stale markers |
| `sources` | dataset sources: schemes, local content, http(s) downloads, `SourceError` |
| `digests` | the one sha256 cache (files by path/size/mtime, derived values by key) |
| `datasets` | a dataset's facts (content digest, row profile) read before planning, judged purely |
| `checks` | data quality checks: one read per dataset (`profile`; `count_rows` when nothing is checked), pure judgements |
| `arrow_tables` | the vectorized csv profile (pyarrow, multi-threaded), exactly the row reader's answers |
| `artifacts` | a model's artifact URI, local paths of URIs |
| `monitoring` | monitor results, findings, breach reasons, stale marker documents |
| `monitor_check` | the drift and health check on files (captured requests, baseline): reports and breach actions (local, kubernetes pods) |
| `drift_stats` | PSI, KS, p99, error rate (the only module that imports numpy) |
| `names` | deterministic names, ownership marks (AWS tags, Kubernetes labels) |
| `accelerators` | accelerator names (`cpu`, `any-gpu`, `nvidia-h100`...) matched against device names by words |
| `parallel` | `run_parallel`: many reads at once, threads only when they wait |
| `pricing` | `PriceTable`, `endpoint_basis`, `pipeline_basis`: price bases (`Provider.cost_basis`) from a price table, measured run durations |
| `storage` | `ObjectStore`: one S3-compatible bucket and prefix (boto3), and the AWS error helpers |
| `serving` | the OIP v2 model server, a program (torch, FastAPI): `local` starts it, kubernetes pods run it |

Nothing is imported here: a provider imports the modules it uses, so a provider
without numpy (or boto3, or torch) still imports.  docs/providers.md has a guide to
writing a provider on the kit, with a complete small example.
"""
