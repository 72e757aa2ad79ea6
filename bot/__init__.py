"""powabot: a Slack bridge for Powabase multi-agent support orchestrations."""

__version__ = "0.1.0"
