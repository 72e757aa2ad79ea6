-- 013: fresh starts kept as history, and each workspace's admin settings.
--
-- "New conversation" (or `reset`) points a Slack thread at a new Powabase session. The mapping
-- it replaces is copied to `chat_session_history` first (never deleted): the Powabase session
-- id, the title and the last run, from when it started (`started_at`: the conversation's
-- creation, or the previous reset) until the reset (`archived_at`). `chat_session_reset` does
-- both in one statement, as the bot (service role or the tables' owner: 007 forbids
-- `authenticated` to change `agent_session_id`).
--
-- `workspace_settings`: one row per Slack workspace, the settings an admin saved in App Home
-- (JSON; the bot validates it), who saved them and when. Service role only.

begin;

create table if not exists public.chat_session_history (
    id bigint generated always as identity primary key,
    chat_session_id uuid not null references public.chat_sessions (id) on delete cascade,
    slack_team_id text,
    slack_channel_id text,
    slack_thread_ts text,
    slack_user_id text,
    agent_session_id text not null,
    title text,
    last_run_id text,
    last_run_status text,
    started_at timestamptz not null,
    archived_at timestamptz not null default now()
);

create index if not exists chat_session_history_session_idx
    on public.chat_session_history (chat_session_id);
create index if not exists chat_session_history_slack_idx
    on public.chat_session_history (slack_team_id, slack_channel_id, slack_thread_ts,
                                    slack_user_id)
    where slack_team_id is not null;

-- A signed-in user sees the history of conversations they own; only the bot writes.
alter table public.chat_session_history enable row level security;

drop policy if exists chat_session_history_own_select on public.chat_session_history;
create policy chat_session_history_own_select on public.chat_session_history
    for select to authenticated
    using (exists (select from public.chat_sessions cs
                   where cs.id = chat_session_id and cs.user_id = auth.uid()));

revoke all on public.chat_session_history from anon, authenticated;
grant select on public.chat_session_history to authenticated;
grant select, insert, update, delete on public.chat_session_history to service_role;

-- A fresh start for one Slack conversation: copy its mapping to the history, then map it to
-- `p_agent_session_id` (last run cleared; the title stays the thread's). Returns the row
-- afterwards, or nothing when the thread has no conversation. An id mapped to another row
-- fails (007's unique index) and leaves both the row and the history unchanged.
create or replace function public.chat_session_reset(
    p_team_id text, p_channel_id text, p_thread_ts text, p_user_id text,
    p_agent_session_id text
)
returns setof public.chat_sessions
language plpgsql
security invoker
set search_path = ''
as $$
declare
    current_row public.chat_sessions;
begin
    select * into current_row from public.chat_sessions cs
     where cs.slack_team_id = p_team_id and cs.slack_channel_id = p_channel_id
       and cs.slack_thread_ts = p_thread_ts and cs.slack_user_id = p_user_id
       for update;
    if not found then
        return;
    end if;
    insert into public.chat_session_history
        (chat_session_id, slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id,
         agent_session_id, title, last_run_id, last_run_status, started_at)
    values (current_row.id, p_team_id, p_channel_id, p_thread_ts, p_user_id,
            current_row.agent_session_id, current_row.title, current_row.last_run_id,
            current_row.last_run_status,
            coalesce((select max(h.archived_at) from public.chat_session_history h
                       where h.chat_session_id = current_row.id),
                     current_row.created_at));
    return query
    update public.chat_sessions cs
       set agent_session_id = p_agent_session_id, last_run_id = null,
           last_run_status = null, last_trace = null
     where cs.id = current_row.id
    returning cs.*;
end;
$$;

revoke all on function public.chat_session_reset(text, text, text, text, text)
    from public, anon, authenticated;
grant execute on function public.chat_session_reset(text, text, text, text, text)
    to service_role;

create table if not exists public.workspace_settings (
    slack_team_id text primary key,
    settings jsonb not null default '{}',
    updated_by text,
    updated_at timestamptz not null default now()
);

create or replace trigger workspace_settings_touch_updated_at
    before update on public.workspace_settings
    for each row execute function public.powabot_touch_updated_at();

-- Service role only: RLS on with no policy, and no grant to the API roles.
alter table public.workspace_settings enable row level security;
revoke all on public.workspace_settings from anon, authenticated;
grant select, insert, update, delete on public.workspace_settings to service_role;

commit;
