-- Monthly card spend by merchant category for analytics (consenting customers only). Cells with
-- fewer than k distinct customers are suppressed into the month's 'Other' category.
with

transactions as (
    select *
    from {{ ref('stg_cards__transactions') }}
    where subject_token in ({{ consented_subjects('analytics') }})
),

-- One row per customer per cell first: the cell sizes are then plain counts, where a distinct
-- count in a window over every transaction took three times as long at 10M.
customer_cells as (
    select
        {{ generalize_date('transaction_date', 'month') }} as spend_month,
        merchant_category,
        subject_token,
        count(*) as transaction_count,
        sum(amount) as total_amount
    from transactions
    group by all
),

cells as (
    select
        *,
        count(*) over (partition by spend_month, merchant_category) as cell_customers
    from customer_cells
)

select
    spend_month,
    case when cell_customers >= {{ var('min_k_gold') }} then merchant_category else 'Other' end as merchant_category,
    count(distinct subject_token) as customer_count,
    cast(sum(transaction_count) as bigint) as transaction_count,
    sum(total_amount) as total_amount
from cells
group by all
having count(distinct subject_token) >= {{ var('min_k_gold') }}
