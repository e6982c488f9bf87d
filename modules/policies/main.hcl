# policies: ready guardrails for a platform team, checked against every plan.
#
#   module "guardrails" {
#     source                 = "../../modules/policies"
#     allowed_instance_types = ["ml.g5.xlarge", "ml.p4d.24xlarge"]
#     gpu_budgets            = { staging = 8, production = 64 }
#     required_tags          = ["team", "cost-center"]
#     max_monthly_cost       = 20000
#     protected_environments = ["production"]
#     levels                 = { required_tags = "advisory" }
#   }
#
# Each policy is off until its variable is set (protect_production_endpoints and
# public_endpoint_auth are on by default).  Every one is mandatory unless `levels` says
# "advisory".  See README.md in this directory and docs/gitops.md.

variable "allowed_instance_types" {
  type        = list(string)
  default     = []
  description = "Instance types endpoints and training clusters may use (empty: any)."
}

variable "gpu_budgets" {
  type        = map(number)
  default     = {}
  description = "Most GPUs the plan may request, per environment name (absent: no budget)."
}

variable "required_tags" {
  type        = list(string)
  default     = []
  description = "Tags every created or updated resource must carry."
}

variable "max_monthly_cost" {
  type        = number
  default     = null
  description = "Ceiling on the plan's monthly cost (its upper end, autoscaling at max), in USD."
}

variable "unknown_cost_fails" {
  type        = bool
  default     = true
  description = "Whether monthly_cost_ceiling fails when a resource's cost is unknown (no price)."
}

variable "protected_environments" {
  type        = list(string)
  default     = ["production"]
  description = "Environments whose endpoints may not be destroyed or replaced."
}

variable "levels" {
  type        = map(string)
  default     = {}
  description = "Level per policy name (\"advisory\" or \"mandatory\"); mandatory when absent."
}

policy "allowed_instance_types" {
  description = "Only approved instance types."
  level       = lookup(var.levels, "allowed_instance_types", "mandatory")
  enabled     = length(var.allowed_instance_types) > 0
  kinds       = ["endpoint", "training_cluster"]
  actions     = ["create", "update", "replace"]
  # An unset instance type is the provider's default choice, which is allowed.
  condition   = contains(concat(var.allowed_instance_types, ["(unset)"]), try(change.after.instance_type, "(unset)"))
  message     = "${change.address} uses instance type ${change.after.instance_type}, which is not one of: ${join(", ", var.allowed_instance_types)}"
}

policy "gpu_budget" {
  description = "The plan stays within the environment's GPU budget."
  level       = lookup(var.levels, "gpu_budget", "mandatory")
  enabled     = contains(keys(var.gpu_budgets), env.name)
  condition   = plan.totals.gpus <= lookup(var.gpu_budgets, env.name, 0)
  message     = "the plan requests ${plan.totals.gpus} GPUs in ${env.name}; the budget is ${lookup(var.gpu_budgets, env.name, 0)}"
}

policy "required_tags" {
  description = "Every created or updated resource carries the required tags."
  level       = lookup(var.levels, "required_tags", "mandatory")
  enabled     = length(var.required_tags) > 0
  actions     = ["create", "update", "replace"]
  condition   = length([for t in var.required_tags : t if !contains(keys(change.tags), t)]) == 0
  message     = "${change.address} lacks the required tag(s): ${join(", ", [for t in var.required_tags : t if !contains(keys(change.tags), t)])}"
}

policy "public_endpoint_auth" {
  description = "An endpoint exposed publicly (settings.public = true) names its authentication (settings.auth)."
  level       = lookup(var.levels, "public_endpoint_auth", "mandatory")
  kinds       = ["endpoint"]
  actions     = ["create", "update", "replace"]
  condition   = !try(change.settings.public, false) || try(change.settings.auth, null) != null
  message     = "${change.address} is public (settings.public = true) but sets no settings.auth"
}

policy "monthly_cost_ceiling" {
  description = "The plan's monthly cost stays under the ceiling."
  level       = lookup(var.levels, "monthly_cost_ceiling", "mandatory")
  enabled     = var.max_monthly_cost != null
  # A resource whose price is unknown could be anything: the ceiling cannot be shown to
  # hold, so it fails unless unknown_cost_fails is false.
  condition   = plan.totals.cost.monthly_max <= var.max_monthly_cost && (length(plan.totals.cost.unknown) == 0 || !var.unknown_cost_fails)
  message     = "the plan would cost up to ${format("%.2f", plan.totals.cost.monthly_max)} USD a month in ${env.name}${length(plan.totals.cost.unknown) > 0 ? " plus the unknown cost of ${join(", ", plan.totals.cost.unknown)}" : ""}; the ceiling is ${format("%.2f", var.max_monthly_cost)} USD"
}

policy "protect_production_endpoints" {
  description = "Endpoints of protected environments are never destroyed or replaced by a plan."
  level       = lookup(var.levels, "protect_production_endpoints", "mandatory")
  enabled     = contains(var.protected_environments, env.name)
  kinds       = ["endpoint"]
  actions     = ["delete", "replace"]
  # Every delete or replace the filters let through fails.
  condition   = change.action == "no-op"
  message     = "${change.address} would be ${change.action == "delete" ? "destroyed" : "replaced"} in ${env.name}, a protected environment"
}
