"""The gateway benchmark: fake upstream, load generators, competitors, scenarios, report."""
