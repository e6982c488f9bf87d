"""`example`: a small, complete provider written on the provider kit, for people writing one.

It keeps each object as a JSON record in a directory (`root`), and serves three kinds:

* `dataset` - a local file or directory, identified by its content digest and checked
  by the kit's data checks (its facts are read before planning, `kit.datasets`);
* `pipeline` - a "run" per fingerprint that records the metrics `settings.metrics`
  says it reached, judged by the gate (`kit.gate`), re-run by the kit's rules
  (`kit.reruns`);
* `model` - a version per artifact.

Every record carries ownership marks (`kit.names.Owner`), so a record another stack
wrote is refused rather than adopted.  docs/providers.md walks through it ("Writing a
provider"); tests/providers/test_contract.py runs it through the contract suite.  It
is not registered as an entry point: a real provider package registers its class
under the ``mlform.providers`` group (see the guide).
"""

from .provider import ExampleConfig, ExampleProvider

__all__ = ["ExampleProvider", "ExampleConfig"]
