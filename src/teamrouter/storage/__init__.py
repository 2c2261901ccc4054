"""Storage: the engine, the unit of work (the only place that commits), migrations, caches."""
