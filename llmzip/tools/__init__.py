"""What llmzip shows about itself: classical codecs side by side (`baselines`, `bench`) and
a page of every token's cost (`explain`). Nothing here changes an archive."""
