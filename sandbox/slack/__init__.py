"""A local Slack stand-in: Web API + Socket Mode + signed HTTP events, for tests and demos.

    async with SlackStandin(rate_limits=RateLimits()) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        app = AsyncApp(client=client)                      # the production app, unchanged
        handler = AsyncSocketModeHandler(app, slack.app_token)
        await handler.connect_async()
        said = await slack.user_says(user="U1", text="hi", channel="D1")
        await slack.wait_for(lambda: len(slack.bot_messages("D1")) > 0)

Interactivity and several workspaces:

        sent = await slack.click(user="U1", channel="D1", message_ts=ts, action_id="feedback",
                                 value="negative")           # block_actions, interactive envelope
        status = await slack.click_http(url, secret, user="U1", ...)   # signed payload= form
        slack.home_views["U1"].blocks                         # views.publish, with history
        token = slack.install_workspace("T0OTHER")            # a second bot token
        slack.register_oauth_code("code-1", "T0OTHER")        # for oauth.v2.access

Modules: ``server`` (HTTP routing, auth, injection, recording), ``web_api`` (the methods),
``interactivity`` (block_actions payloads),
``socket_mode`` (connections, envelopes, acks, retries), ``store`` (messages and threads),
``events`` (payload builders, HTTP signing), ``ratelimit`` (token buckets), ``faults`` (what
``slack.inject(...)`` and ``slack.chaos(rate, seed=...)`` can answer instead: Slack errors, 429s
with seconds or an HTTP date, a proxy's plain-text or HTML 5xx, resets, slow answers).
"""

from sandbox.slack.faults import Chaos, Fault
from sandbox.slack.ratelimit import RateLimits
from sandbox.slack.server import ActionResponse, ApiCall, SentEvent, SlackStandin, UserMessage
from sandbox.slack.socket_mode import Delivery
from sandbox.slack.store import StoredMessage
from sandbox.slack.web_api import HomeView, UserGroup

__all__ = [
    "ActionResponse",
    "ApiCall",
    "Chaos",
    "Delivery",
    "Fault",
    "HomeView",
    "RateLimits",
    "SentEvent",
    "SlackStandin",
    "StoredMessage",
    "UserGroup",
    "UserMessage",
]
