"""Tencent Cloud IM: UserSig (TLSSigAPIv2) and the provider's error-code taxonomy.

The `tencent_im` kind's REST client, probes and emulator build on these (issue 5)."""
