-- 004: Slack event ids already handled, so a retried or duplicated delivery is processed once
-- across every bot replica. A replica claims an id with
--     insert into public.slack_events (event_id) values ($1) on conflict do nothing
-- and handles the event only when a row was inserted.

begin;

create table if not exists public.slack_events (
    event_id text primary key,
    claimed_at timestamptz not null default now()
);

create index if not exists slack_events_claimed_at_idx on public.slack_events (claimed_at);

-- Service role only: RLS on with no policy hides the table from anon/authenticated even if
-- someone grants them access later.
alter table public.slack_events enable row level security;
revoke all on public.slack_events from anon, authenticated;
grant select, insert, delete on public.slack_events to service_role;

-- Retention: Slack retries an event for about an hour, so ids older than a day can go.
-- The bot deletes old ids itself every few hundred claims; this function is for a scheduler.
create or replace function public.prune_slack_events(keep interval default interval '24 hours')
returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
    removed integer;
begin
    delete from public.slack_events where claimed_at < now() - keep;
    get diagnostics removed = row_count;
    return removed;
end;
$$;

revoke all on function public.prune_slack_events(interval) from public, anon, authenticated;
grant execute on function public.prune_slack_events(interval) to service_role;

-- When pg_cron is installed (Supabase offers it), prune hourly; otherwise the bot's own
-- pruning is enough. cron.schedule with a job name replaces an existing job of that name.
do $$
begin
    if exists (select from pg_extension where extname = 'pg_cron') then
        execute $cron$
            select cron.schedule('powabot-prune-slack-events', '17 * * * *',
                                 'select public.prune_slack_events()')
        $cron$;
    end if;
end
$$;

commit;
