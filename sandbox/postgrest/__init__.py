"""A PostgREST stand-in: the few request forms powabot's Supabase store sends, translated to
parameterised SQL on a real Postgres and run as the role the request's JWT names."""

from sandbox.postgrest.server import PostgrestStandin, RecordedRequest, make_jwt

__all__ = ["PostgrestStandin", "RecordedRequest", "make_jwt"]
