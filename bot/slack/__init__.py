"""Everything that speaks to Slack: the Bolt app, its listeners, and the publisher."""
