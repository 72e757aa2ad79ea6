-- 002: who a Slack user is. One row per (workspace, Slack user), created the first time the
-- bot stores a conversation for them. user_id stays null until the person is linked to a
-- web-app account (auth.users); see 005 for how linking happens.

begin;

create table if not exists public.slack_identities (
    team_id text not null,
    slack_user_id text not null,
    -- The Slack profile email (users.info, scope users:read.email), stored lower-case.
    email text check (email is null or email = lower(email)),
    user_id uuid references auth.users (id) on delete set null,
    linked_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (team_id, slack_user_id)
);

create index if not exists slack_identities_user_idx
    on public.slack_identities (user_id) where user_id is not null;
create index if not exists slack_identities_email_idx
    on public.slack_identities (email) where email is not null;

create or replace trigger slack_identities_touch_updated_at
    before update on public.slack_identities
    for each row execute function public.powabot_touch_updated_at();

-- A signed-in user may see which Slack identities are linked to them; nothing else.
-- Writes are the bot's (service_role bypasses RLS) or the link functions' (005).
alter table public.slack_identities enable row level security;

drop policy if exists slack_identities_self_select on public.slack_identities;
create policy slack_identities_self_select on public.slack_identities
    for select to authenticated
    using (auth.uid() = user_id);

revoke all on public.slack_identities from anon, authenticated;
grant select on public.slack_identities to authenticated;
grant select, insert, update, delete on public.slack_identities to service_role;

commit;
