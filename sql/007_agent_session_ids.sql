-- 007: one conversation per Powabase session id, and only the bot may move a row to another one.
-- Powabase adopts any unknown session id as a new session, so two rows sharing an id share one
-- history: a collision, or an id a signed-in user copies into their own row, merges two
-- people's conversations. The index below makes a second row with the same id impossible; the
-- privileges below keep web users from changing the id of a row they own.

begin;

-- Keep writers out while duplicates are repaired and the index is built, so no new duplicate
-- can slip in between the two (readers are not blocked).
lock table public.chat_sessions in share row exclusive mode;

-- Rows that already share an id (possible before this migration) would make the unique index
-- fail. The oldest row of each group keeps its id and so its history; every newer row gets a
-- fresh id and its next message starts a new Powabase session. Its earlier messages stay in
-- the oldest row's session: an already merged history cannot be split again. The fresh id has
-- the bot's shape, `orch_sess_` + hex, from two gen_random_uuid() calls (244 random bits).
-- A no-op once the ids are unique, so re-running this file changes nothing.
with ranked as (
    select id,
           row_number() over (partition by agent_session_id order by created_at, id) as n
      from public.chat_sessions
)
update public.chat_sessions cs
   set agent_session_id = 'orch_sess_'
       || replace(gen_random_uuid()::text, '-', '')
       || replace(gen_random_uuid()::text, '-', '')
  from ranked
 where cs.id = ranked.id and ranked.n > 1;

create unique index if not exists chat_sessions_agent_session_id_key
    on public.chat_sessions (agent_session_id);

-- A signed-in web user still inserts rows with the id Powabase gave them (the recipe's insert;
-- the index refuses someone else's id) and may still update the recipe's other columns, but may
-- not point an existing row at another session. 003 already grants only column-level updates;
-- this repeats the list without agent_session_id, for databases migrated by an earlier 003.
-- (A table-level REVOKE also drops the column-level grants.) The bot writes the column as
-- service_role or as the tables' owner, which these privileges do not restrict.
revoke update on public.chat_sessions from authenticated;
grant update (user_id, title, created_at, updated_at) on public.chat_sessions to authenticated;

commit;
