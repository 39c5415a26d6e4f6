{{ config(incremental_strategy='merge', unique_key='transaction_id', cluster_by='subject_token') }}
-- Card transactions: typed and deduplicated by transaction id. Incremental: only rows ingested
-- since the last run are merged, so late and out-of-order events land where they belong.
with

source as (
    select * from {{ ref('raw_cards__transactions') }}
    {%- if is_incremental() %}
    where ingested_at > (select coalesce(max(ingested_at), timestamp '1900-01-01') from {{ this }})
    {%- endif %}
),

-- One window over all rows. Narrowing it to the repeated ids (a UNION of an IN and a NOT IN
-- arm) saves memory but hangs DuckDB 1.4 on incremental runs (duckdb/duckdb#24961).
deduplicated as (
    select *
    from source
    qualify row_number() over (partition by transaction_id order by ingested_at, ingest_key) = 1
)

select
    transaction_id,
    subject_token,
    account_token,
    card_token,
    {{ top_bottom_code('cast(amount as decimal(18, 2))', -100000, 100000) }} as amount,
    upper(currency) as currency,
    merchant_category,
    upper(merchant_country) as merchant_country,
    strptime(transaction_ts, '%Y-%m-%d %H:%M:%S') as transaction_ts,
    cast(strptime(transaction_ts, '%Y-%m-%d %H:%M:%S') as date) as transaction_date,
    lower(channel) as channel,
    device_token,
    ingested_at
from deduplicated
