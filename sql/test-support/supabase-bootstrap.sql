-- A small stand-in for the parts of a Supabase/Powabase database that powabot's migrations rely on.
-- NOT a migration: tests (and a bare self-hosted Postgres) apply it once before sql/0*.sql.
-- It creates the `auth` schema with `auth.users` and `auth.uid()`, the API roles PostgREST
-- switches to (anon / authenticated / service_role), the `authenticator` login role, and the
-- default grants Supabase gives those roles on objects in `public`. Safe to apply twice.

begin;

create schema if not exists auth;

-- The columns of GoTrue's auth.users that our SQL reads; the real table has many more.
create table if not exists auth.users (
    id uuid primary key default gen_random_uuid(),
    email text,
    email_confirmed_at timestamptz,
    created_at timestamptz not null default now()
);

-- Same contract as Supabase's auth.uid(): the `sub` claim of the JWT PostgREST put into
-- `request.jwt.claims` for this transaction, or null when there is none (anon, direct SQL).
create or replace function auth.uid() returns uuid
language sql stable
as $$
    select nullif(
        nullif(current_setting('request.jwt.claims', true), '')::json ->> 'sub', ''
    )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
    select nullif(current_setting('request.jwt.claims', true), '')::json ->> 'role'
$$;

-- Roles. service_role bypasses row-level security, as on Supabase.
do $$
begin
    if not exists (select from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

grant usage on schema public to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid(), auth.role() to anon, authenticated, service_role;
grant select on auth.users to service_role;

-- Supabase grants the API roles everything on new objects in `public` and relies on RLS;
-- the migrations must therefore revoke what they do not want exposed.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;

commit;
