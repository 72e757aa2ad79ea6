-- 009: every Slack question answered exactly once across replicas, and finished.
--
-- One row per Slack message the bot answers, keyed by the message (team, channel, ts): an
-- `app_mention` and a `message` for one Slack message, or a retry in a new envelope, are one
-- answer. The replica that inserts the row owns the answer and holds a lease on it, renewed
-- while it works; when a replica dies its leases expire and another replica takes the answer
-- over (same Powabase session, same Slack reply message `reply_ts`). A replica stopping with
-- answers it could not finish releases them (lease expired now) so that they are taken over at
-- once. `question` is the user's text, kept only while the answer is open: it is cleared when
-- the answer is done. Rows are pruned a day after they are done (by the bot, and by
-- `prune_slack_answers()` for a scheduler).
--
-- The functions below are the only writers besides the plain `reply_ts` update: both stores
-- (asyncpg direct and supabase-py via PostgREST `/rpc`) call them, so the atomic statements live
-- in one place. `security invoker`, `search_path = ''`, executable by service_role only.

begin;

create table if not exists public.slack_answers (
    team_id text not null,
    channel_id text not null,
    message_ts text not null,
    event_ids text[] not null default '{}',
    user_id text not null,
    question text,
    thread_ts text,
    channel_type text,
    owner text not null,
    lease_expires_at timestamptz not null,
    reply_ts text,
    reply_native boolean not null default false,
    status text not null default 'running',
    attempts integer not null default 1,
    created_at timestamptz not null default now(),
    finished_at timestamptz,
    primary key (team_id, channel_id, message_ts),
    constraint slack_answers_status check (status in ('running', 'released', 'done'))
);

-- The takeover scan reads only open answers, oldest lease first.
create index if not exists slack_answers_open_idx
    on public.slack_answers (lease_expires_at) where status <> 'done';
create index if not exists slack_answers_finished_at_idx
    on public.slack_answers (finished_at) where status = 'done';

-- Service role only: RLS on with no policy hides the table (and the questions in it) from
-- anon/authenticated even if someone grants them access later.
alter table public.slack_answers enable row level security;
revoke all on public.slack_answers from anon, authenticated;
grant select, insert, update, delete on public.slack_answers to service_role;

-- Claim an answer: true for the one replica whose insert made the row; a duplicate delivery
-- only adds its event id to the row (at most 20 kept) and gets false.
create or replace function public.slack_answer_claim(
    p_team_id text, p_channel_id text, p_message_ts text, p_event_id text, p_user_id text,
    p_question text, p_thread_ts text, p_channel_type text, p_owner text,
    p_lease_seconds double precision
)
returns boolean
language plpgsql
security invoker
set search_path = ''
as $$
declare
    claimed text;
begin
    insert into public.slack_answers as a
        (team_id, channel_id, message_ts, event_ids, user_id, question, thread_ts,
         channel_type, owner, lease_expires_at)
    values (p_team_id, p_channel_id, p_message_ts, array[p_event_id], p_user_id, p_question,
            p_thread_ts, p_channel_type, p_owner,
            now() + make_interval(secs => p_lease_seconds))
    on conflict (team_id, channel_id, message_ts) do nothing
    returning a.message_ts into claimed;
    if claimed is not null then
        return true;
    end if;
    update public.slack_answers a
       set event_ids = array_append(a.event_ids, p_event_id)
     where a.team_id = p_team_id and a.channel_id = p_channel_id and a.message_ts = p_message_ts
       and not (p_event_id = any(a.event_ids)) and cardinality(a.event_ids) < 20;
    return false;
end;
$$;

-- Renew the leases `p_owner` still holds among `p_keys` ([[team, channel, ts], ...]); returns
-- the keys renewed (a key missing from the answer was taken over by another replica).
create or replace function public.slack_answer_renew(
    p_owner text, p_lease_seconds double precision, p_keys jsonb
)
returns table (team_id text, channel_id text, message_ts text)
language sql
security invoker
set search_path = ''
as $$
    update public.slack_answers a
       set lease_expires_at = now() + make_interval(secs => p_lease_seconds)
      from jsonb_array_elements(p_keys) k
     where a.owner = p_owner and a.status = 'running'
       and a.team_id = k ->> 0 and a.channel_id = k ->> 1 and a.message_ts = k ->> 2
    returning a.team_id, a.channel_id, a.message_ts;
$$;

-- Take over at most `p_limit` open answers whose lease expired (a replica died) or was released
-- (a replica stopped): each gets a new owner and lease, attempts + 1. `skip locked`: two
-- replicas scanning at once never take the same row.
create or replace function public.slack_answer_take_over(
    p_owner text, p_lease_seconds double precision, p_limit integer
)
returns setof public.slack_answers
language sql
security invoker
set search_path = ''
as $$
    update public.slack_answers a
       set owner = p_owner, status = 'running', attempts = a.attempts + 1,
           lease_expires_at = now() + make_interval(secs => p_lease_seconds)
     where (a.team_id, a.channel_id, a.message_ts) in (
               select o.team_id, o.channel_id, o.message_ts
                 from public.slack_answers o
                where o.status in ('running', 'released') and o.lease_expires_at < now()
                order by o.lease_expires_at
                limit p_limit
                  for update skip locked)
    returning a.*;
$$;

-- The answer is finished (delivered, or ended with a notice): done, and the question cleared.
create or replace function public.slack_answer_finish(
    p_owner text, p_team_id text, p_channel_id text, p_message_ts text
)
returns boolean
language sql
security invoker
set search_path = ''
as $$
    with done as (
        update public.slack_answers a
           set status = 'done', finished_at = now(), question = null
         where a.team_id = p_team_id and a.channel_id = p_channel_id
           and a.message_ts = p_message_ts and a.owner = p_owner and a.status <> 'done'
        returning 1)
    select exists (select from done);
$$;

-- A stopping replica hands the answers it could not finish to the others at once.
create or replace function public.slack_answer_release(p_owner text, p_keys jsonb)
returns integer
language sql
security invoker
set search_path = ''
as $$
    with released as (
        update public.slack_answers a
           set status = 'released', lease_expires_at = now()
          from jsonb_array_elements(p_keys) k
         where a.owner = p_owner and a.status = 'running'
           and a.team_id = k ->> 0 and a.channel_id = k ->> 1 and a.message_ts = k ->> 2
        returning 1)
    select count(*)::integer from released;
$$;

-- Retention: a retried event (Slack retries for up to about an hour) must still find its row.
create or replace function public.prune_slack_answers(keep interval default interval '24 hours')
returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
    removed integer;
begin
    delete from public.slack_answers where status = 'done' and finished_at < now() - keep;
    get diagnostics removed = row_count;
    return removed;
end;
$$;

revoke all on function public.slack_answer_claim(text, text, text, text, text, text, text, text,
    text, double precision) from public, anon, authenticated;
revoke all on function public.slack_answer_renew(text, double precision, jsonb)
    from public, anon, authenticated;
revoke all on function public.slack_answer_take_over(text, double precision, integer)
    from public, anon, authenticated;
revoke all on function public.slack_answer_finish(text, text, text, text)
    from public, anon, authenticated;
revoke all on function public.slack_answer_release(text, jsonb) from public, anon, authenticated;
revoke all on function public.prune_slack_answers(interval) from public, anon, authenticated;
grant execute on function public.slack_answer_claim(text, text, text, text, text, text, text,
    text, text, double precision) to service_role;
grant execute on function public.slack_answer_renew(text, double precision, jsonb)
    to service_role;
grant execute on function public.slack_answer_take_over(text, double precision, integer)
    to service_role;
grant execute on function public.slack_answer_finish(text, text, text, text) to service_role;
grant execute on function public.slack_answer_release(text, jsonb) to service_role;
grant execute on function public.prune_slack_answers(interval) to service_role;

commit;
