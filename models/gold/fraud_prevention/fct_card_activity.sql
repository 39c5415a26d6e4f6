{{ config(cluster_by='subject_token') }}
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
        count(*) over (
            partition by transactions.card_token
            order by transactions.transaction_ts
            range between interval 1 hour preceding and current row
        ) as card_transactions_last_hour,
        transactions.amount > 5 * avg(transactions.amount) over (
            partition by transactions.card_token
        ) as is_unusual_amount
    from transactions
    left join customers on transactions.subject_token = customers.subject_token
)

select
    *,
    (is_foreign and is_unusual_amount) or card_transactions_last_hour >= 5 as needs_review
from signals
