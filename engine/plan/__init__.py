"""Plans: immutable values (`model`), the pure diff (`diff`), run fingerprints
(`fingerprints`), the evaluation of the configuration (`evaluate`), the planner's
inputs as values (`inputs`), the pure planning walk (`planner`) and the JSON plan
document (`codec`).  Nothing here does I/O: `mlform.operations` reads state and
facts around it and `mlform.planfile` saves plans."""
