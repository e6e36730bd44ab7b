"""The User Batch service: job templates and the entry point of templated jobs (queue, runners, quotas and the
API come with the facility issue)."""
