{{ config(cluster_by='subject_token') }}
-- Current state of each customer: typed, deduplicated (latest update wins), pseudonymous.
-- Quasi-identifiers are generalized here per column meta.
with

source as (
    select * from {{ ref('raw_core_banking__customers') }}
),

latest as (
    select *
    from source
    qualify row_number() over (
        partition by subject_token
        order by strptime(updated_at, '%Y-%m-%d %H:%M:%S') desc, ingested_at desc, source_file desc, ingest_key
    ) = 1
),

typed as (
    select
        -- keys
        subject_token,
        email_token,
        phone_token,
        national_id_token,
        -- encrypted contact details, readable only for fraud investigation
        email_enc,
        phone_enc,
        -- generalized quasi-identifiers
        cast(strptime(birth_date, '%Y-%m-%d') as date) as birth_date,
        postcode,
        city,
        upper(country) as country,
        -- attributes
        preferred_language,
        cast(strptime(created_at, '%Y-%m-%d %H:%M:%S') as date) as customer_since,
        strptime(updated_at, '%Y-%m-%d %H:%M:%S') as updated_at
    from latest
)

-- The select list comes from the columns' meta (treatment per layer): tokens carried from
-- bronze, birth date to year and age band, postcode to its area.
select {{ privacy_select() }}
from typed
