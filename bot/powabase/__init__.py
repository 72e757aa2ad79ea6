"""Talking to the Powabase API: typed stream events and the streaming client."""
