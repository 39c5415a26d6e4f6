{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Card transactions: typed and deduplicated by transaction id, the first delivery of each id
-- kept. Incremental: rows ingested since the last run whose id the table does not hold yet are
-- appended, so a build after each batch keeps what one full build keeps (a later re-delivery of
-- an id never replaces its first). Late events need no merge: rows carry their own event time.
-- The anti-join reads only the table's id column; a merge on the id read and joined every row.
with

source as (
    select * from {{ ref('raw_cards__transactions') }} as raw
    {%- if is_incremental() %}
    where
        raw.ingested_at > (
            select coalesce(max(ingested_at), timestamp '1900-01-01') from {{ this }}
        )
        and not exists (
            select 1 from {{ this }} as held where held.transaction_id = raw.transaction_id
        )
    {%- endif %}
),

-- The first delivery of each transaction id: an aggregate and a join, which DuckDB spills to
-- disk under a memory limit, where a row_number() window over every row ran out of memory at
-- 10M rows (and narrowing the window with an IN/NOT IN union hangs DuckDB 1.4,
-- duckdb/duckdb#24961).
first_deliveries as (
    select
        transaction_id,
        -- source_file breaks ties between files ingested in one build (a full build ingests
        -- every file at once), so a full build keeps what builds after each batch keep
        min((ingested_at, source_file, ingest_key)) as first_delivery
    from source
    group by transaction_id
),

deduplicated as (
    select source.*
    from source
    inner join first_deliveries
        on
            source.transaction_id = first_deliveries.transaction_id
            and (source.ingested_at, source.source_file, source.ingest_key) = first_deliveries.first_delivery
)

-- distinct: a line delivered twice verbatim in one file shares its ingest key, and its copies
-- are identical in every column kept here.
select distinct
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
