from django.urls import path

from . import campaign_views, dataset_views, export_views, views

app_name = "collection"
urlpatterns = [
    path("datasets/", dataset_views.datasets, name="datasets"),
    path("datasets/imports/", dataset_views.import_upload, name="import_upload"),
    path("datasets/imports/<int:job_id>/", dataset_views.import_job, name="import_job"),
    path("datasets/snapshots/<int:job_id>/", dataset_views.snapshot_job, name="snapshot_job"),
    path("datasets/<int:snapshot_id>/export/", export_views.export_request, name="export_request"),
    path("datasets/exports/<int:job_id>/", export_views.export_job, name="export_job"),
    path("datasets/exports/<int:job_id>/file/", export_views.export_download, name="export_file"),
    path("conversations/", dataset_views.conversation_browse, name="conversations"),
    path(
        "conversations/<int:conversation_id>/read/",
        dataset_views.conversation_read,
        name="conversation_read",
    ),
    path("campaigns/", campaign_views.campaign_list, name="campaigns"),
    path("campaigns/new/", campaign_views.campaign_new, name="campaign_new"),
    path("campaigns/<int:campaign_id>/", campaign_views.campaign_detail, name="campaign"),
    path("campaigns/<int:campaign_id>/edit/", campaign_views.campaign_edit, name="campaign_edit"),
    path(
        "campaigns/<int:campaign_id>/pause/", campaign_views.campaign_pause, name="campaign_pause"
    ),
    path(
        "campaigns/<int:campaign_id>/resume/",
        campaign_views.campaign_resume,
        name="campaign_resume",
    ),
    path(
        "campaigns/<int:campaign_id>/close/", campaign_views.campaign_close, name="campaign_close"
    ),
    path("quality/", views.quality, name="quality"),
    path("datasets/<int:snapshot_id>/download/", views.snapshot_download, name="download"),
    path("", views.dashboard, name="dashboard"),
    path("campaigns/<int:campaign_id>/start/", views.conversation_start, name="start"),
    path("conversations/<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("conversations/<int:conversation_id>/message/", views.message_submit, name="message"),
    path("conversations/<int:conversation_id>/end/", views.conversation_end, name="end"),
    path("turns/<int:turn_id>/", views.turn_detail, name="turn"),
    path("turns/<int:turn_id>/judge/", views.turn_judge, name="judge"),
    path("turns/<int:turn_id>/retry/", views.turn_retry, name="retry"),
    path("turns/<int:turn_id>/revise/", views.turn_revise, name="revise"),
    path("review/", views.review, name="review"),
    path("review/<int:turn_id>/judge/", views.review_judge, name="review_judge"),
    path("gold/", views.gold_items, name="gold"),
]
