"""The streaming benchmark: the real bot in Socket Mode against the local stand-ins.

Run it with ``.venv/bin/python -m bench`` (see ``bench/README.md``). The bot runs in its own child
process (``bench.bot_child``) so that its peak RSS and event-loop lag are its own; the Slack and
Powabase stand-ins and the measuring code run in the parent.
"""
