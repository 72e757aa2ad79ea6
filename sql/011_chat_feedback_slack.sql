-- 011: ratings from Slack in chat_feedback (006): who rated which answer message.
--
-- A Slack rating names the rated answer by its message (team, channel, reply_ts, see 010) and
-- the Slack user who clicked (`slack_user_id`, who may differ from the asker); one rater has one
-- rating per answer (a second click replaces the first: `chat_feedback_record` upserts on
-- `chat_feedback_slack_rater_key`). `updated_at` is when the rating was last given, the time the
-- export filters on. Web ratings (006) leave the four Slack columns null and never collide.
-- RLS is 006's: a signed-in user sees the ratings of conversations they own, and the web app
-- may not write the Slack columns (column privileges are 006's list).

begin;

alter table public.chat_feedback add column if not exists slack_team_id text;
alter table public.chat_feedback add column if not exists slack_channel_id text;
alter table public.chat_feedback add column if not exists reply_ts text;
alter table public.chat_feedback add column if not exists slack_user_id text;
alter table public.chat_feedback add column if not exists answer_log_id bigint
    references public.answer_log (id) on delete cascade;
alter table public.chat_feedback add column if not exists updated_at timestamptz
    not null default now();

do $$
begin
    -- The Slack columns come as a set of four.
    if not exists (select from pg_constraint
                   where conname = 'chat_feedback_slack_key_complete'
                     and conrelid = 'public.chat_feedback'::regclass) then
        alter table public.chat_feedback add constraint chat_feedback_slack_key_complete
            check (num_nulls(slack_team_id, slack_channel_id, reply_ts, slack_user_id)
                   in (0, 4));
    end if;
    -- One rating per rater and answer message (nulls distinct: web rows never collide).
    if not exists (select from pg_constraint
                   where conname = 'chat_feedback_slack_rater_key'
                     and conrelid = 'public.chat_feedback'::regclass) then
        alter table public.chat_feedback add constraint chat_feedback_slack_rater_key
            unique (slack_team_id, slack_channel_id, reply_ts, slack_user_id);
    end if;
end
$$;

create index if not exists chat_feedback_answer_idx on public.chat_feedback (answer_log_id)
    where answer_log_id is not null;
create index if not exists chat_feedback_updated_idx on public.chat_feedback (updated_at);

create or replace trigger chat_feedback_touch_updated_at
    before update on public.chat_feedback
    for each row execute function public.powabot_touch_updated_at();

-- Store a Slack rating of the answer message (team, channel, reply_ts) by `p_rater_id`,
-- replacing that rater's earlier one. False when no such answer is kept (unknown, or its
-- conversation was deleted): the rating is dropped.
create or replace function public.chat_feedback_record(
    p_team_id text, p_channel_id text, p_reply_ts text, p_rater_id text, p_rating integer
)
returns boolean
language sql
security invoker
set search_path = ''
as $$
    with rated as (
        insert into public.chat_feedback as f
            (chat_session_id, run_id, rating, source, slack_team_id, slack_channel_id,
             reply_ts, slack_user_id, answer_log_id)
        select a.chat_session_id, a.run_id, p_rating::smallint, 'slack', p_team_id,
               p_channel_id, p_reply_ts, p_rater_id, a.id
          from public.answer_log a
         where a.slack_team_id = p_team_id and a.slack_channel_id = p_channel_id
           and a.reply_ts = p_reply_ts
        on conflict (slack_team_id, slack_channel_id, reply_ts, slack_user_id) do update
           set rating = excluded.rating, run_id = excluded.run_id,
               chat_session_id = excluded.chat_session_id,
               answer_log_id = excluded.answer_log_id
        returning 1)
    select exists (select from rated);
$$;

revoke all on function public.chat_feedback_record(text, text, text, text, integer)
    from public, anon, authenticated;
grant execute on function public.chat_feedback_record(text, text, text, text, integer)
    to service_role;

commit;
