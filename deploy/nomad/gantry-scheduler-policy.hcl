# What the scheduler's workload identity may do in the namespace its worker
# jobs run in: register, scale, stop and purge them, follow their
# allocations, evaluations and services, and read worker logs.
namespace "default" {
  capabilities = ["list-jobs", "read-job", "submit-job", "scale-job", "read-logs"]
}
