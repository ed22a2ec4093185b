"""`im-prober tencent-setup`: import the two probe accounts and create the probe group (a
Work group, not an AVChatRoom) for a `tencent_im` target. Idempotent: imports are no-ops
for existing accounts, and an existing group id (10021) is kept."""

from __future__ import annotations

import asyncio

from ..adapters.tencent_im import TencentImAdapter, TencentSection, _Fail
from ..errors import UserError

GROUP_EXISTS = 10021


async def _setup(adapter: TencentImAdapter, section: TencentSection) -> list[str]:
    done = []
    for account in (section.from_account, section.to_account):
        await adapter.call(
            "im_open_login_svc/account_import", {"UserID": account, "Nick": "im-prober"}
        )
        done.append(f"account {account}: imported")
    if section.group_id is not None:
        try:
            await adapter.call(
                "group_open_http_svc/create_group",
                {
                    "Owner_Account": section.from_account,
                    "Type": "Work",
                    "GroupId": section.group_id,
                    "Name": "im-prober",
                    "MemberList": [{"Member_Account": section.to_account}],
                },
            )
            done.append(f"group {section.group_id}: created")
        except _Fail as exc:
            if exc.result.error_code != GROUP_EXISTS:
                raise
            done.append(f"group {section.group_id}: exists")
    return done


def setup(target: str, section: TencentSection) -> list[str]:
    async def main() -> list[str]:
        adapter = TencentImAdapter(target, section, 10.0)
        try:
            return await _setup(adapter, section)
        except _Fail as exc:
            result = exc.result
            raise UserError(
                f"tencent-setup: {result.outcome}/{result.error_kind}: {result.detail}"
            ) from None
        finally:
            await adapter.aclose()

    return asyncio.run(main())
