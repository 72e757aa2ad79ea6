-- 010: every answer the bot delivered, kept for feedback, escalation and export (issue 13).
--
-- One row per answer message in Slack: (team, channel, reply_ts) names the answer's first
-- message, which is what a feedback or "Talk to a person" click carries. A row belongs to its
-- conversation (`chat_session_id`): deleting the conversation deletes its answers (and, through
-- 011/012, their ratings and escalations). The bot writes through `answer_log_record`, which
-- finds the conversation by its Slack key; question and answer are capped by the bot at 40 000
-- characters (a Slack message's limit).

begin;

create table if not exists public.answer_log (
    id bigint generated always as identity primary key,
    chat_session_id uuid not null references public.chat_sessions (id) on delete cascade,
    slack_team_id text not null,
    slack_channel_id text not null,
    slack_thread_ts text not null,
    slack_user_id text not null,
    reply_ts text not null,
    run_id text,
    question text not null,
    answer text not null,
    status text not null,
    -- JSON arrays of strings: the specialists that answered, the sources the answer showed.
    specialists jsonb not null default '[]',
    sources jsonb not null default '[]',
    tokens integer,
    created_at timestamptz not null default now()
);

do $$
begin
    -- One row per answer message; a plain constraint so `on conflict (…)` can name it.
    if not exists (select from pg_constraint
                   where conname = 'answer_log_reply_key'
                     and conrelid = 'public.answer_log'::regclass) then
        alter table public.answer_log add constraint answer_log_reply_key
            unique (slack_team_id, slack_channel_id, reply_ts);
    end if;
end
$$;

create index if not exists answer_log_session_idx on public.answer_log (chat_session_id);

-- A signed-in user reads the answers of conversations they own (the subquery is itself
-- filtered by chat_sessions' RLS); only the bot writes.
alter table public.answer_log enable row level security;

drop policy if exists answer_log_own_select on public.answer_log;
create policy answer_log_own_select on public.answer_log
    for select to authenticated
    using (exists (select from public.chat_sessions cs
                   where cs.id = chat_session_id and cs.user_id = auth.uid()));

revoke all on public.answer_log from anon, authenticated;
grant select on public.answer_log to authenticated;
grant select, insert, update, delete on public.answer_log to service_role;

-- Keep a delivered answer (a second call for the same message replaces it). False when the
-- thread has no conversation (nothing to attach the answer to): the bot logs and moves on.
create or replace function public.answer_log_record(
    p_team_id text, p_channel_id text, p_thread_ts text, p_user_id text, p_reply_ts text,
    p_run_id text, p_question text, p_answer text, p_status text, p_specialists jsonb,
    p_sources jsonb, p_tokens integer
)
returns boolean
language sql
security invoker
set search_path = ''
as $$
    with kept as (
        insert into public.answer_log as a
            (chat_session_id, slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id,
             reply_ts, run_id, question, answer, status, specialists, sources, tokens)
        select cs.id, p_team_id, p_channel_id, p_thread_ts, p_user_id, p_reply_ts, p_run_id,
               p_question, p_answer, p_status, coalesce(p_specialists, '[]'),
               coalesce(p_sources, '[]'), p_tokens
          from public.chat_sessions cs
         where cs.slack_team_id = p_team_id and cs.slack_channel_id = p_channel_id
           and cs.slack_thread_ts = p_thread_ts and cs.slack_user_id = p_user_id
        on conflict (slack_team_id, slack_channel_id, reply_ts) do update
           set chat_session_id = excluded.chat_session_id,
               slack_thread_ts = excluded.slack_thread_ts,
               slack_user_id = excluded.slack_user_id,
               run_id = excluded.run_id, question = excluded.question,
               answer = excluded.answer, status = excluded.status,
               specialists = excluded.specialists, sources = excluded.sources,
               tokens = excluded.tokens
        returning 1)
    select exists (select from kept);
$$;

revoke all on function public.answer_log_record(text, text, text, text, text, text, text, text,
    text, jsonb, jsonb, integer) from public, anon, authenticated;
grant execute on function public.answer_log_record(text, text, text, text, text, text, text,
    text, text, jsonb, jsonb, integer) to service_role;

commit;
