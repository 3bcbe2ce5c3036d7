"""Hypothesis profiles for the whole test suite, chosen with HYPOTHESIS_PROFILE.

- `ci` (the default): hypothesis' usual 100 examples per test, no deadline (claims write
  and fsync files, so their timing varies), and no health check for slow or large data
  generation (a generated contract with its evidence is both).
- `long`: ten times the examples, for a soak run by hand: HYPOTHESIS_PROFILE=long pytest.

Tests whose examples are expensive (whole claims) take a fraction of this through
`strategies.examples()`; tests that pass their own max_examples keep it in both profiles.
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=100, **_COMMON)
settings.register_profile("long", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
