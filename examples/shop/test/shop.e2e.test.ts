// The shop on the embedded SQLite backend, end to end (see scenario.ts): SHOP_SECONDS under load
// (default 20) at SHOP_RATE orders/s (default 15); SHOP_SHIPPING_TIMEOUT_MS longer than the
// outage makes every order waiting for Shipping ship instead of being compensated.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runShopScenario } from './scenario.ts';

const seconds = Number(process.env.SHOP_SECONDS ?? 20);

test(`the shop on SQLite under load for ${seconds} s, Shipping stopped and restarted, then a clean stop and a resume`, { timeout: (seconds + 180) * 1000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-shop-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await runShopScenario({
    dir,
    backend: { kind: 'sqlite', path: join(dir, 'shop.db') },
    seconds,
    rate: Number(process.env.SHOP_RATE ?? 15),
    ...(process.env.SHOP_SHIPPING_TIMEOUT_MS ? { shippingTimeoutMs: Number(process.env.SHOP_SHIPPING_TIMEOUT_MS) } : {}),
  });
});
