"""bess-farm dashboards and Prometheus rules as code (see docs/dashboards.md).

``python grafana/build.py --write`` regenerates grafana/dashboards/*.json and grafana/rules/*.yaml;
``--check`` fails when they are stale (tests/test_grafana.py runs it).
"""
