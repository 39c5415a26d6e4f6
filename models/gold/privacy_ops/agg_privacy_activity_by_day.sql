-- Privacy telemetry from the audit log: per day, actor, role and purpose, the decryptions (and
-- how many subjects they touched), the exports to serving files (and how many rows), and the
-- queries the enforcement point allowed or denied. The build appends its own evidence at its
-- end, so each build sees the activity up to the end of the previous one. The flags mark an
-- actor whose daily totals exceed the thresholds in vars; the YAML's tests warn on them.
with

source as (
    select * from {{ source('audit', 'audit_log') }}
),

renamed as (
    select
        -- when: entries are written in UTC ISO 8601, so the first ten characters are the UTC day
        cast(left(ts, 10) as date) as activity_date,
        -- who
        actor,
        coalesce(details ->> 'role', 'n.a.') as role,
        -- what
        action,
        decision,
        coalesce(details ->> 'purpose', 'n.a.') as purpose,
        -- how much
        coalesce(try_cast(details ->> 'subjects' as bigint), 0) as subjects,
        coalesce(try_cast(details ->> 'rows_exported' as bigint), 0) as rows_exported
    from source
    where action in ('decrypt', 'export', 'access_decision')
),

daily as (
    select
        activity_date,
        actor,
        role,
        purpose,
        count(*) filter (where action = 'decrypt') as decrypt_calls,
        cast(coalesce(sum(subjects) filter (where action = 'decrypt'), 0) as bigint) as decrypted_subjects,
        count(*) filter (where action = 'export') as exports,
        cast(coalesce(sum(rows_exported) filter (where action = 'export'), 0) as bigint) as rows_exported,
        count(*) filter (
            where action = 'access_decision' and decision = 'allow'
        ) as queries_allowed,
        count(*) filter (where action = 'access_decision' and decision = 'deny') as queries_denied
    from renamed
    group by activity_date, actor, role, purpose
)

select
    activity_date,
    actor,
    role,
    purpose,
    decrypt_calls,
    decrypted_subjects,
    exports,
    rows_exported,
    queries_allowed,
    queries_denied,
    -- thresholds apply to an actor's totals for the day, whatever role or purpose they used
    sum(decrypted_subjects) over (partition by activity_date, actor)
    > {{ var('telemetry_max_decrypted_subjects_per_day', 500) }} as is_unusual_decryption,
    sum(rows_exported) over (partition by activity_date, actor)
    > {{ var('telemetry_max_exported_rows_per_day', 1000000) }} as is_unusual_export
from daily
