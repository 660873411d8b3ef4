"""Constants of the test "Supabase project" shared by fixtures and tests."""

from __future__ import annotations

#: The legacy HS256 secret of the test project and the internal service-token secret.
TEST_JWT_SECRET = "test-supabase-jwt-secret-" + "x" * 24
TEST_INTERNAL_SECRET = "test-internal-secret-" + "y" * 24
