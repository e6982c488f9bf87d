"""Provider plugins.  `base` holds the contract; each provider is a sub-package
registered under the ``mlform.providers`` entry-point group."""
