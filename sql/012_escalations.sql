-- 012: conversations handed to a person, and the feedback export.
--
-- An escalation is asked for in a Slack thread ("Talk to a person", or a message asking for a
-- human): the bot posts in the escalation channel (`escalation_channel_id`, its message
-- `message_ts`) and stays quiet in that thread until someone marks it resolved. At most one
-- escalation is open per Slack thread (`escalations_one_open_key`, partial: resolved ones are
-- history). `chat_session_id` is the asker's conversation when there is one (a thread message
-- from someone the bot never answered has none); deleting the conversation deletes its
-- escalations. The bot opens and resolves through the functions below (one statement each: a
-- second request in the same thread gets the open one back, the first resolver wins).

begin;

create table if not exists public.escalations (
    id bigint generated always as identity primary key,
    chat_session_id uuid references public.chat_sessions (id) on delete cascade,
    slack_team_id text not null,
    slack_channel_id text not null,
    slack_thread_ts text not null,
    slack_user_id text not null,
    run_id text,
    specialist text,
    requested_by text not null,
    escalation_channel_id text not null,
    message_ts text,
    created_at timestamptz not null default now(),
    resolved_by text,
    resolved_at timestamptz,
    constraint escalations_resolved_complete check ((resolved_by is null) = (resolved_at is null))
);

create unique index if not exists escalations_one_open_key
    on public.escalations (slack_team_id, slack_channel_id, slack_thread_ts)
    where resolved_at is null;
create index if not exists escalations_session_idx on public.escalations (chat_session_id);

-- A signed-in user sees the escalations of conversations they own; only the bot writes.
alter table public.escalations enable row level security;

drop policy if exists escalations_own_select on public.escalations;
create policy escalations_own_select on public.escalations
    for select to authenticated
    using (exists (select from public.chat_sessions cs
                   where cs.id = chat_session_id and cs.user_id = auth.uid()));

revoke all on public.escalations from anon, authenticated;
grant select on public.escalations to authenticated;
grant select, insert, update, delete on public.escalations to service_role;

-- Open an escalation in a thread, or return the one already open there.
create or replace function public.escalation_open(
    p_team_id text, p_channel_id text, p_thread_ts text, p_user_id text, p_run_id text,
    p_specialist text, p_requested_by text, p_escalation_channel_id text
)
returns setof public.escalations
language plpgsql
security invoker
set search_path = ''
as $$
begin
    -- A racing request inserts nothing and reads the winner's row in the next statement
    -- (a new snapshot); the loop covers the winner being resolved in between.
    for attempt in 1..3 loop
        return query
        insert into public.escalations as e
            (chat_session_id, slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id,
             run_id, specialist, requested_by, escalation_channel_id)
        values ((select cs.id from public.chat_sessions cs
                  where cs.slack_team_id = p_team_id and cs.slack_channel_id = p_channel_id
                    and cs.slack_thread_ts = p_thread_ts and cs.slack_user_id = p_user_id),
                p_team_id, p_channel_id, p_thread_ts, p_user_id, p_run_id, p_specialist,
                p_requested_by, p_escalation_channel_id)
        on conflict (slack_team_id, slack_channel_id, slack_thread_ts)
            where resolved_at is null do nothing
        returning e.*;
        if found then
            return;
        end if;
        return query
        select e.* from public.escalations e
         where e.slack_team_id = p_team_id and e.slack_channel_id = p_channel_id
           and e.slack_thread_ts = p_thread_ts and e.resolved_at is null;
        if found then
            return;
        end if;
    end loop;
    raise exception 'escalation_open: no open escalation after 3 attempts';
end;
$$;

-- Close an escalation: the first resolver gets the row back, anyone later gets nothing.
create or replace function public.escalation_resolve(p_id bigint, p_resolved_by text)
returns setof public.escalations
language sql
security invoker
set search_path = ''
as $$
    update public.escalations e
       set resolved_by = p_resolved_by, resolved_at = now()
     where e.id = p_id and e.resolved_at is null
    returning e.*;
$$;

-- `powabot feedback export`: every Slack rating (oldest first, optionally those given at or
-- after `p_since`) with its answer and the number of escalations of that conversation.
create or replace function public.chat_feedback_export(p_since timestamptz default null)
returns table (
    rated_at timestamptz, team_id text, channel_id text, thread_ts text, asker_id text,
    rater_id text, rating integer, run_id text, question text, answer text,
    specialists jsonb, sources jsonb, tokens integer, escalations integer
)
language sql
stable
security invoker
set search_path = ''
as $$
    select f.updated_at, a.slack_team_id, a.slack_channel_id, a.slack_thread_ts,
           a.slack_user_id, f.slack_user_id, f.rating::integer, a.run_id, a.question,
           a.answer, a.specialists, a.sources, a.tokens,
           (select count(*)::integer from public.escalations e
             where e.chat_session_id = a.chat_session_id)
      from public.chat_feedback f
      join public.answer_log a on a.id = f.answer_log_id
     where p_since is null or f.updated_at >= p_since
     order by f.updated_at, f.id;
$$;

revoke all on function public.escalation_open(text, text, text, text, text, text, text, text)
    from public, anon, authenticated;
revoke all on function public.escalation_resolve(bigint, text) from public, anon, authenticated;
revoke all on function public.chat_feedback_export(timestamptz) from public, anon, authenticated;
grant execute on function public.escalation_open(text, text, text, text, text, text, text, text)
    to service_role;
grant execute on function public.escalation_resolve(bigint, text) to service_role;
grant execute on function public.chat_feedback_export(timestamptz) to service_role;

commit;
