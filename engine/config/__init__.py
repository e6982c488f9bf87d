"""Configuration: spec files read into a typed, not yet evaluated `StackConfig`.

`syntax` parses every format (HCL, YAML, JSON) into one positioned `Body` shape,
`decode` turns bodies into the `model` types, `inputs` gathers root variable values,
and `loader` reads a stack directory, its modules and the chosen environment.
"""
