-- Monthly card spend by merchant category for analytics (consenting customers only). Cells with
-- fewer than k distinct customers are suppressed into the month's 'Other' category.
with

transactions as (
    select *
    from {{ ref('stg_cards__transactions') }}
    where subject_token in ({{ consented_subjects('analytics') }})
),

cells as (
    select
        {{ generalize_date('transaction_date', 'month') }} as spend_month,
        merchant_category,
        subject_token,
        amount,
        count(distinct subject_token) over (
            partition by {{ generalize_date('transaction_date', 'month') }}, merchant_category
        ) as cell_customers
    from transactions
)

select
    spend_month,
    case when cell_customers >= {{ var('min_k_gold') }} then merchant_category else 'Other' end as merchant_category,
    count(distinct subject_token) as customer_count,
    count(*) as transaction_count,
    sum(amount) as total_amount
from cells
group by all
having count(distinct subject_token) >= {{ var('min_k_gold') }}
