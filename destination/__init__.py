"""tiktok-audiences: a Segment-style destination for TikTok Audiences."""
