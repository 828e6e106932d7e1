/* The reports' front page: links to each report, in the page's language. */
(function () {
  "use strict";
  Page.texts({
    zh: { title: "应急联动服务中心 · 报表", evaluation: "月度考核通报（得分、排名、图表）",
      record: "单位效能档案", spotchecks: "每周暗访（抽样、回访、通报）", fortnight: "领导小组半月协调报告" },
    en: { title: "Linkage service center · Reports", evaluation: "Monthly evaluation (scores, ranking, charts)",
      record: "Efficiency record of a unit", spotchecks: "Weekly spot checks (sample, callbacks, circular)",
      fortnight: "Fortnightly coordination report" },
  });
  window.Reports.header();
})();
