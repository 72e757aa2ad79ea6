-- 003: what the Slack bot adds to chat_sessions. The recipe's six columns keep their meaning;
-- everything below is extra and left null by the web app.

begin;

-- Where a Slack conversation lives. All four are set (Slack rows) or all four are null
-- (web-app rows); see the check constraint below.
alter table public.chat_sessions add column if not exists slack_team_id text;
alter table public.chat_sessions add column if not exists slack_channel_id text;
alter table public.chat_sessions add column if not exists slack_thread_ts text;
alter table public.chat_sessions add column if not exists slack_user_id text;

-- The last Powabase run of the conversation (written by the bot's record_run).
alter table public.chat_sessions add column if not exists last_run_id text;
alter table public.chat_sessions add column if not exists last_run_status text;
alter table public.chat_sessions add column if not exists last_trace jsonb;

-- Slack users without a web-app account have no auth.users row, so their rows have no user_id.
-- The recipe's NOT NULL is kept for every row that is not a Slack row (check below), so a
-- web-app row can still never lack an owner.
alter table public.chat_sessions alter column user_id drop not null;

do $$
begin
    -- Slack columns come as a set of four.
    if not exists (select from pg_constraint
                   where conname = 'chat_sessions_slack_key_complete'
                     and conrelid = 'public.chat_sessions'::regclass) then
        alter table public.chat_sessions add constraint chat_sessions_slack_key_complete
            check (num_nulls(slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id)
                   in (0, 4));
    end if;

    -- Only a Slack row may be ownerless (until its Slack user is linked).
    if not exists (select from pg_constraint
                   where conname = 'chat_sessions_owner_present'
                     and conrelid = 'public.chat_sessions'::regclass) then
        alter table public.chat_sessions add constraint chat_sessions_owner_present
            check (user_id is not null or slack_team_id is not null);
    end if;

    -- One row per Slack thread and user: racing first messages insert one row, the loser's
    -- INSERT ... ON CONFLICT DO NOTHING inserts nothing. A plain (not partial) unique
    -- constraint so PostgREST's on_conflict=<columns> can name it; web rows (all null) never
    -- collide because nulls are distinct.
    if not exists (select from pg_constraint
                   where conname = 'chat_sessions_slack_thread_key'
                     and conrelid = 'public.chat_sessions'::regclass) then
        alter table public.chat_sessions add constraint chat_sessions_slack_thread_key
            unique (slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id);
    end if;

    -- Every Slack row belongs to a Slack identity (created by the trigger below).
    if not exists (select from pg_constraint
                   where conname = 'chat_sessions_slack_identity_fkey'
                     and conrelid = 'public.chat_sessions'::regclass) then
        alter table public.chat_sessions add constraint chat_sessions_slack_identity_fkey
            foreign key (slack_team_id, slack_user_id)
            references public.slack_identities (team_id, slack_user_id) on delete cascade;
    end if;
end
$$;

-- A new Slack row gets its identity row, and inherits the identity's linked account, so
-- the conversations of an already-linked Slack user appear in the web app at once.
create or replace function public.chat_sessions_adopt_slack_identity() returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
    if new.slack_team_id is null then
        return new;
    end if;
    insert into public.slack_identities (team_id, slack_user_id)
    values (new.slack_team_id, new.slack_user_id)
    on conflict (team_id, slack_user_id) do nothing;
    if new.user_id is null then
        select si.user_id into new.user_id
        from public.slack_identities si
        where si.team_id = new.slack_team_id and si.slack_user_id = new.slack_user_id;
    end if;
    return new;
end;
$$;

create or replace trigger chat_sessions_adopt_slack_identity
    before insert on public.chat_sessions
    for each row execute function public.chat_sessions_adopt_slack_identity();

create index if not exists chat_sessions_slack_user_idx
    on public.chat_sessions (slack_team_id, slack_user_id) where slack_team_id is not null;

-- Privileges. The web app (authenticated) keeps reading every column of its own rows and
-- writing the recipe's columns; the Slack and trace columns are written by the bot only.
-- Without this a signed-in user could insert a row carrying someone else's Slack thread key
-- and so capture that thread's conversation. RLS still limits every command to own rows.
revoke insert, update on public.chat_sessions from authenticated;
-- RLS does not apply to TRUNCATE; PostgREST never issues it, so nothing the web app uses is lost.
revoke truncate, references, trigger on public.chat_sessions from anon, authenticated;
grant select, delete on public.chat_sessions to authenticated;
-- agent_session_id is insert-only for web users: 007 explains why.
grant insert (id, user_id, agent_session_id, title, created_at, updated_at),
      update (user_id, title, created_at, updated_at)
    on public.chat_sessions to authenticated;
grant select, insert, update, delete on public.chat_sessions to service_role;

commit;
