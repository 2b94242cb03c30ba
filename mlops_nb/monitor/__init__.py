"""Monitoring of served models: drift and training-serving skew of what the service saw
(servelog.py reads the serving log, check.py compares and reports, retrain.py starts a
retraining run through DVC, lock.py lets one retraining run at a time)."""
