"""`fastcontrast bench`: timing and memory profiling against the baselines."""
