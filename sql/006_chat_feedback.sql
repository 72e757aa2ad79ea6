-- 006: thumbs up/down on an answer, from Slack (written by the bot) or the web app.
-- Not used by the bot yet; here so the feedback feature does not need a schema change.

begin;

create table if not exists public.chat_feedback (
    id bigint generated always as identity primary key,
    chat_session_id uuid not null references public.chat_sessions (id) on delete cascade,
    run_id text,
    rating smallint not null check (rating in (-1, 1)),
    comment text,
    source text not null default 'web' check (source in ('web', 'slack')),
    created_at timestamptz not null default now()
);

create index if not exists chat_feedback_session_idx on public.chat_feedback (chat_session_id);

-- A signed-in user sees and adds feedback only on conversations they own (the subquery is
-- itself filtered by chat_sessions' RLS).
alter table public.chat_feedback enable row level security;

drop policy if exists chat_feedback_own_select on public.chat_feedback;
create policy chat_feedback_own_select on public.chat_feedback
    for select to authenticated
    using (exists (select from public.chat_sessions cs
                   where cs.id = chat_session_id and cs.user_id = auth.uid()));

drop policy if exists chat_feedback_own_insert on public.chat_feedback;
create policy chat_feedback_own_insert on public.chat_feedback
    for insert to authenticated
    with check (source = 'web'
                and exists (select from public.chat_sessions cs
                            where cs.id = chat_session_id and cs.user_id = auth.uid()));

revoke all on public.chat_feedback from anon, authenticated;
grant select on public.chat_feedback to authenticated;
grant insert (chat_session_id, run_id, rating, comment, source)
    on public.chat_feedback to authenticated;
grant select, insert, update, delete on public.chat_feedback to service_role;

commit;
