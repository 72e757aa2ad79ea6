-- 005: linking a Slack identity to a web-app account, so the Slack user's conversations
-- show up in the web app under their login.
--
-- Linking = setting slack_identities.user_id. A trigger then hands that identity's ownerless
-- Slack rows (and rows it owned under a previous link) to the new account. Three ways in:
--   * link_slack_identity(team, slack user, auth user)  - explicit; service_role only.
--   * link_slack_identities_by_email(auth user)         - by verified email; service_role only.
--   * link_my_slack_identities()                        - self-service for a signed-in user;
--     NOT granted to anyone by default (see sql/README.md: it trusts confirmed emails).

begin;

create or replace function public.slack_identities_hand_over_rows() returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
    -- Unlinking (user_id back to null) leaves rows with the account that has them.
    if new.user_id is null then
        return new;
    end if;
    update public.chat_sessions cs
       set user_id = new.user_id
     where cs.slack_team_id = new.team_id
       and cs.slack_user_id = new.slack_user_id
       and (cs.user_id is null
            or (tg_op = 'UPDATE' and cs.user_id is not distinct from old.user_id));
    return new;
end;
$$;

create or replace trigger slack_identities_hand_over_rows
    after insert or update of user_id on public.slack_identities
    for each row execute function public.slack_identities_hand_over_rows();

-- Explicit link, for an admin or a bot flow that verified the person some other way.
-- Returns how many Slack conversations the account owns afterwards.
create or replace function public.link_slack_identity(
    p_team_id text, p_slack_user_id text, p_user_id uuid
) returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
    owned integer;
begin
    if p_user_id is null then
        raise exception 'link_slack_identity: p_user_id must not be null'
            using errcode = '22004';
    end if;
    insert into public.slack_identities (team_id, slack_user_id, user_id, linked_at)
    values (p_team_id, p_slack_user_id, p_user_id, now())
    on conflict (team_id, slack_user_id)
        do update set user_id = excluded.user_id, linked_at = excluded.linked_at;
    select count(*) into owned
      from public.chat_sessions
     where slack_team_id = p_team_id and slack_user_id = p_slack_user_id
       and user_id = p_user_id;
    return owned;
end;
$$;

-- Link every still-unlinked Slack identity whose email equals the account's confirmed email.
-- Returns the number of identities linked.
create or replace function public.link_slack_identities_by_email(p_user_id uuid)
returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
    linked integer;
begin
    update public.slack_identities si
       set user_id = u.id, linked_at = now()
      from auth.users u
     where u.id = p_user_id
       and u.email_confirmed_at is not null
       and u.email is not null
       and si.email = lower(u.email)
       and si.user_id is null;
    get diagnostics linked = row_count;
    return linked;
end;
$$;

-- Self-service variant for the web app: links the caller's own identities.
-- SECURITY DEFINER because the caller can neither see unlinked identities (RLS) nor read
-- auth.users; it acts only on auth.uid(), takes no other input, and pins search_path.
create or replace function public.link_my_slack_identities() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
    me uuid := auth.uid();
begin
    if me is null then
        raise exception 'link_my_slack_identities: not signed in' using errcode = '42501';
    end if;
    return public.link_slack_identities_by_email(me);
end;
$$;

revoke all on function public.slack_identities_hand_over_rows() from public, anon, authenticated;
revoke all on function public.link_slack_identity(text, text, uuid)
    from public, anon, authenticated;
revoke all on function public.link_slack_identities_by_email(uuid)
    from public, anon, authenticated;
revoke all on function public.link_my_slack_identities() from public, anon, authenticated;
grant execute on function public.link_slack_identity(text, text, uuid) to service_role;
grant execute on function public.link_slack_identities_by_email(uuid) to service_role;

commit;
