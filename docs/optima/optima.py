"""Exact optima of the two all-discrete models in this folder, by finite-horizon value iteration
(pure Python, no dependencies): the expected total cost from the models' initial states, which
`hmdpc eval` estimates on its test scenarios for a trained policy.

    python3 docs/optima/optima.py
"""


def replacement():
    """replacement.hmdp: three independent machines, so the optimum is the sum of each one's."""
    repair, wear, horizon = 60.0, [0.5, 0.4, 0.1], 100
    total = 0.0
    for m in range(3):
        a = 1 + 0.5 * m
        value = [0.0] * 10
        for _ in range(horizon):
            after = []
            for grade in range(10):
                costs = []
                for replace in (False, True):
                    base = 0 if replace else grade
                    future = sum(p * value[min(base + w, 9)] for w, p in enumerate(wear))
                    costs.append(a * base * base + (repair if replace else 0.0) + future)
                after.append(min(costs))
            value = after
        total += value[0]
    return total


def batch_orders():
    """batch_orders.hmdp: the stock within [-30, 80], orders of 0, 10 or 25 units."""
    fixed, h, b, horizon = 40.0, 0.2, 2.0, 200
    demand = [0.1, 0.2, 0.4, 0.2, 0.1]
    states = range(-30, 81)
    value = {s: 0.0 for s in states}
    for _ in range(horizon):
        after = {}
        for stock in states:
            costs = []
            for q in (0, 10, 25):
                post = stock + q
                cost = fixed if q > 0 else 0.0
                for d, p in enumerate(demand):
                    nxt = max(min(post - d, 80), -30)
                    cost += p * (h * max(post - d, 0) + b * max(d - post, 0) + value[nxt])
                costs.append(cost)
            after[stock] = min(costs)
        value = after
    return value[0]


if __name__ == "__main__":
    print(f"replacement.hmdp   {replacement():.2f}")
    print(f"batch_orders.hmdp  {batch_orders():.2f}")
