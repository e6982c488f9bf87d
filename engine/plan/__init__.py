"""Plans: immutable values (`model`), the pure diff (`diff`), lineage rules
(`lineage`), the planning walk that feeds them (`planner`) and saved plan
files (`planfile`)."""
