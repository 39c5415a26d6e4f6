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

-- Deduplicated by transaction id, first ingested wins. Re-delivered transactions are rare, so the
-- window runs over the repeated ids only; a window over every row would hold them all in memory.
repeated as (
    select transaction_id
    from source
    group by transaction_id
    having count(*) > 1
),

deduplicated as (
    select *
    from source
    where transaction_id not in (select transaction_id from repeated)
    union all
    select *
    from source
    where transaction_id in (select transaction_id from repeated)
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
