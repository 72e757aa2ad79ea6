-- 008: one Slack rate budget for every bot replica (GCRA on the database clock).
--
-- Slack limits each Web API method per workspace (chat.update, chat.*Stream) or per channel
-- (chat.postMessage), whichever replica calls. Each budget is one row: `key` names it
-- (`update:<team>`, `post:<channel>`, `start:<team>`, `append:<team>`, `stop:<team>`, ...) and
-- `tat` is its "theoretical arrival time": the moment the budget is back to full, minus one
-- interval. A replica reserves a slot with ONE statement,
--     select public.reserve_slack_budget(key, interval, burst, max_wait, reserve)
-- and sleeps the seconds it returns before calling Slack; NULL means "not within max_wait"
-- and nothing was reserved (an intermediate edit is then skipped: the next one carries newer
-- text). Time is always `clock_timestamp()` of the database, never a replica's clock.

begin;

create table if not exists public.slack_budget (
    key text primary key,
    tat timestamptz not null
);

create index if not exists slack_budget_tat_idx on public.slack_budget (tat);

-- Service role only (like 004): RLS on with no policy, nothing for the API roles.
alter table public.slack_budget enable row level security;
revoke all on public.slack_budget from anon, authenticated;
grant select, insert, update, delete on public.slack_budget to service_role;

-- Retention: a key whose tat is an hour old is a full budget, the same as no row at all, so
-- deleting it changes nothing. Keys of idle channels would otherwise pile up.
create or replace function public.prune_slack_budget(keep interval default interval '1 hour')
returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
    removed integer;
begin
    delete from public.slack_budget where tat < clock_timestamp() - keep;
    get diagnostics removed = row_count;
    return removed;
end;
$$;

-- GCRA (generic cell rate algorithm), as a token bucket of `p_burst` tokens refilled one per
-- `p_interval` seconds. With T = p_interval and tolerance tau = (p_burst - 1 - p_reserve) * T
-- (never below 0): the request conforms at greatest(tat - tau, now); it is granted when that
-- is at most `p_max_wait` seconds away, and then tat becomes greatest(tat, now) + T. The
-- return value is the wait in seconds (0 = send now). `p_reserve` keeps that many tokens free
-- for others (the final edits of answers): an intermediate edit passes it, a final edit not.
-- The insert ... on conflict do update is one atomic statement: concurrent callers on one key
-- queue on its row lock and each moves tat by exactly one interval (no lost update).
create or replace function public.reserve_slack_budget(
    p_key text,
    p_interval double precision,
    p_burst double precision,
    p_max_wait double precision,
    p_reserve double precision default 0
)
returns double precision
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_now timestamptz := clock_timestamp();
    v_step interval := make_interval(secs => p_interval);
    v_tolerance interval := make_interval(secs => greatest(p_burst - 1 - p_reserve, 0) * p_interval);
    v_tat timestamptz;
begin
    insert into public.slack_budget as b (key, tat)
    values (p_key, v_now + v_step)
    on conflict (key) do update
        set tat = greatest(b.tat, v_now) + v_step
        where greatest(b.tat - v_tolerance, v_now) <= v_now + make_interval(secs => p_max_wait)
    returning b.tat into v_tat;
    if v_tat is null then
        return null;  -- the wait would exceed p_max_wait: nothing reserved
    end if;
    -- About one reservation in 500 also drops keys idle for an hour (see prune_slack_budget).
    if random() < 0.002 then
        delete from public.slack_budget where tat < v_now - interval '1 hour';
    end if;
    -- The old tat is the new one minus T; the conforming time is greatest(old - tau, now).
    return greatest(extract(epoch from (v_tat - v_step - v_tolerance - v_now))::double precision, 0);
end;
$$;

-- A 429 from Slack: nobody may send on `p_key` before `p_seconds` from now. The caller passes
-- Retry-After plus the time the bucket takes to refill from empty (burst x interval), so that
-- every replica starts again from an empty bucket after the pause, like a local bucket does.
create or replace function public.push_slack_budget(p_key text, p_seconds double precision)
returns void
language sql
volatile
security invoker
set search_path = ''
as $$
    insert into public.slack_budget as b (key, tat)
    values (p_key, clock_timestamp() + make_interval(secs => p_seconds))
    on conflict (key) do update
        set tat = greatest(b.tat, clock_timestamp() + make_interval(secs => p_seconds));
$$;

revoke all on function public.prune_slack_budget(interval) from public, anon, authenticated;
revoke all on function public.reserve_slack_budget(
    text, double precision, double precision, double precision, double precision
) from public, anon, authenticated;
revoke all on function public.push_slack_budget(text, double precision)
    from public, anon, authenticated;
grant execute on function public.prune_slack_budget(interval) to service_role;
grant execute on function public.reserve_slack_budget(
    text, double precision, double precision, double precision, double precision
) to service_role;
grant execute on function public.push_slack_budget(text, double precision) to service_role;

-- When pg_cron is installed (Supabase offers it), prune hourly as well.
do $$
begin
    if exists (select from pg_extension where extname = 'pg_cron') then
        execute $cron$
            select cron.schedule('powabot-prune-slack-budget', '23 * * * *',
                                 'select public.prune_slack_budget()')
        $cron$;
    end if;
end
$$;

commit;
