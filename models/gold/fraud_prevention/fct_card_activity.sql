{#- The windows and their join hold memory the clustering sort also needs: staged first, each
    step fits a 1GB limit at 10M transactions, where one query ran out (bench/README.md). -#}
{{ config(cluster_by='subject_token', stage_rows_before_sort=true) }}
-- Card activity for fraud prevention: one row per transaction, pseudonymous (tokens), with the
-- signals investigators use. Investigators re-identify a subject only through the audited,
-- purpose-gated decrypt function, never from this table.
with

transactions as (
    select *
    from {{ ref('stg_cards__transactions') }}
    where subject_token in ({{ consented_subjects('fraud_prevention') }})
),

customers as (
    select subject_token, country as home_country
    from {{ ref('stg_core_banking__customers') }}
),

-- A DuckDB window holds its whole input in memory. Over every column of 9M rows it ran out of
-- memory under a 2GB limit; over four narrow columns, with each card as a small integer instead
-- of its 35-character token, it passes under 1GB (bench/README.md). The id is exact (a join),
-- where a hash of the token could merge two cards' windows.
card_ids as (
    select card_token, row_number() over () as card_id
    from (select distinct card_token from transactions) as cards
),

card_windows as (
    select
        transactions.transaction_id,
        count(*) over (
            partition by card_ids.card_id
            order by transactions.transaction_ts
            range between interval 1 hour preceding and current row
        ) as card_transactions_last_hour,
        transactions.amount > 5 * avg(transactions.amount) over (
            partition by card_ids.card_id
        ) as is_unusual_amount
    from transactions
    inner join card_ids on transactions.card_token = card_ids.card_token
),

signals as (
    select
        transactions.transaction_id,
        transactions.subject_token,
        transactions.card_token,
        transactions.transaction_ts,
        transactions.amount,
        transactions.currency,
        transactions.merchant_category,
        transactions.merchant_country,
        transactions.channel,
        transactions.merchant_country <> customers.home_country as is_foreign,
        card_windows.card_transactions_last_hour,
        card_windows.is_unusual_amount
    from transactions
    inner join card_windows on transactions.transaction_id = card_windows.transaction_id
    left join customers on transactions.subject_token = customers.subject_token
)

select
    *,
    (is_foreign and is_unusual_amount) or card_transactions_last_hour >= 5 as needs_review
from signals
