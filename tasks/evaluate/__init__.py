"""The evaluate stage's components: metrics, baselines, contamination checks, lm-eval runs, the HTML report."""
