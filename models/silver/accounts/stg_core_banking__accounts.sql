{{ config(cluster_by='subject_token') }}
-- Accounts: typed, latest delivery per account wins.
with

source as (
    select * from {{ ref('raw_core_banking__accounts') }}
),

latest as (
    select *
    from source
    qualify row_number() over (
        partition by account_token order by ingested_at desc, source_file desc, ingest_key
    ) = 1
)

select
    account_token,
    subject_token,
    iban_token,
    lower(account_type) as account_type,
    upper(currency) as currency,
    cast(coalesce(
        try_strptime(opened_at, '%Y-%m-%d %H:%M:%S'), try_strptime(opened_at, '%Y-%m-%d')
    ) as date) as opened_on,
    lower(status) as account_status,
    {{ top_bottom_code('cast(balance as decimal(18, 2))', -1000000, 1000000) }} as balance
from latest
