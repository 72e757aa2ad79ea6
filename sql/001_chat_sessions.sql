-- 001: the recipe's chat_sessions table (Powabase cookbook recipe 01), as the web app expects it.
-- A database that already ran the recipe's schema.sql + policies.sql passes through unchanged.

begin;

-- One row per conversation; agent_session_id is the Powabase session holding the messages.
create table if not exists public.chat_sessions (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id) on delete cascade,
    agent_session_id text not null,
    title text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- The web app lists a user's conversations newest first.
create index if not exists chat_sessions_user_created_idx
    on public.chat_sessions (user_id, created_at desc);

-- Any update moves updated_at, whoever makes it (web app or bot).
create or replace function public.powabot_touch_updated_at() returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create or replace trigger chat_sessions_touch_updated_at
    before update on public.chat_sessions
    for each row execute function public.powabot_touch_updated_at();

-- Row-level security: a signed-in user reads and writes only rows whose user_id is theirs.
-- Rows with a null user_id (Slack users not yet linked, see 003) match no one.
alter table public.chat_sessions enable row level security;

drop policy if exists chat_sessions_self_all on public.chat_sessions;
create policy chat_sessions_self_all on public.chat_sessions
    for all
    using (auth.uid() = user_id)
    with check (auth.uid() = user_id);

commit;
