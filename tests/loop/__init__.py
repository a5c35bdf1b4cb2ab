"""The whole loop end to end (cross-cutting: api, jobs, datastore, train, models)."""
